"""OpenTelemetry spans along the lineage: record → start → step attempts → connector calls →
outbox publish, one trace per triggering event.

Off unless configured the OpenTelemetry way (``OTEL_EXPORTER_OTLP_ENDPOINT`` or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``; the SDK reads ``OTEL_SERVICE_NAME``,
``OTEL_TRACES_SAMPLER``, ``OTEL_TRACES_SAMPLER_ARG``, ``OTEL_BSP_*`` itself). Off, every
helper here returns at its first test of ``_tracer`` and allocates nothing, so the hot paths
pay one attribute read.

An event the sampler leaves out costs one decision, not a span per stage: its record's span
is started (that is where the sampler decides), and below a span that is not sampled no
further span is made: its context is carried on as it is (recorded in the trigger, made
current around step attempts, passed in headers), so every instrumented call under it is
left out too, as the parent-based samplers would decide anyway.

The execution's trace context is data, like its lineage: the start span's ``traceparent`` is
recorded in the trigger (``trigger["trace"]``, beside the upstream ``traceparent``), so every
step attempt, on whichever worker and after whichever crash, is a child of the start.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import os
import re
from collections.abc import Iterator, Mapping, MutableMapping
from typing import TYPE_CHECKING, Any

import structlog
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from structlog.typing import EventDict, WrappedLogger

    from hub.engine.context import StepContext
    from hub.tracing_sampler import PrimedIds

log = structlog.get_logger("hub.tracing")

TRACE_KEY = "trace"
"""The trigger's key holding the execution's trace context (a W3C ``traceparent``)."""

_tracer: trace.Tracer | None = None
_provider: TracerProvider | None = None
_primed: PrimedIds | None = None
"""The provider's id generator when it lets the hub sample a root before making it."""
_OFF: contextlib.nullcontext[None] = contextlib.nullcontext()
_W3C = TraceContextTextMapPropagator()
_idempotency_key: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "hub_trace_idempotency_key", default=None)

_left_out_record: contextvars.ContextVar[trace.SpanContext | None] = contextvars.ContextVar(
    "hub_left_out_record", default=None)
"""While a sampled-out record is handled: its context, which a start carries on as it is."""
_ENDPOINTS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")


# version ff and all-zero ids are invalid by the W3C spec
_TRACEPARENT = re.compile(
    r"(?!ff)[0-9a-f]{2}-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}")


def well_formed_traceparent(value: str | None) -> str | None:
    """A W3C ``traceparent`` fit to carry in a trigger; anything else an upstream sends
    (garbage, a NUL byte, a lone surrogate) is dropped, so it can neither refuse the start
    nor be stored."""
    return value if value is not None and _TRACEPARENT.fullmatch(value) else None


def enabled() -> bool:
    return _tracer is not None


def wanted(env: Mapping[str, str] | None = None) -> bool:
    """Whether the environment asks for traces: an OTLP endpoint is set, and neither
    ``OTEL_SDK_DISABLED=true`` nor ``OTEL_TRACES_EXPORTER=none`` turns them off."""
    env = os.environ if env is None else env
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if env.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "none":
        return False
    return any(env.get(name, "").strip() for name in _ENDPOINTS)


def configure_tracing(service_name: str = "commerce-hub") -> bool:
    """Export spans over OTLP/HTTP when the environment asks for it (see :func:`wanted`);
    a process's entry points (worker, API, dev mode) call this once. True when on."""
    if _tracer is not None or not wanted():
        return _tracer is not None
    protocol = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
                              os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"))
    if protocol.strip() != "http/protobuf":
        log.error("tracing_unavailable", protocol=protocol,
                  fix="the hub exports OTLP over HTTP: set OTEL_EXPORTER_OTLP_PROTOCOL="
                      "http/protobuf and the collector's OTLP/HTTP endpoint (port 4318)")
        return False
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:
        log.error("tracing_unavailable", error=str(exc),
                  fix="install the hub with its [otel] extra: pip install 'commerce-hub[otel]'")
        return False
    # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES win over our default name
    named = {} if os.environ.get("OTEL_SERVICE_NAME") else {SERVICE_NAME: service_name}
    from hub.tracing_sampler import PrimedIds, StatementsInTraces

    provider = TracerProvider(resource=Resource.create(named), sampler=StatementsInTraces(),
                              id_generator=PrimedIds())
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    install(provider)
    log.info("tracing_configured", endpoint=next(
        os.environ[n] for n in _ENDPOINTS if os.environ.get(n, "").strip()))
    return True


def install(provider: TracerProvider) -> None:
    """Trace with ``provider`` (an embedding program's, or a test's with an in-memory
    exporter) and instrument the HTTP client and the Postgres driver with it."""
    global _tracer, _provider, _primed
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    from hub.tracing_sampler import PrimedIds

    uninstall()
    HTTPXClientInstrumentor().instrument(tracer_provider=provider,
                                         async_request_hook=_on_http_request)
    AsyncPGInstrumentor().instrument(tracer_provider=provider)  # type: ignore[no-untyped-call]
    _provider = provider
    _tracer = provider.get_tracer("hub")
    ids = provider.id_generator
    _primed = ids if isinstance(ids, PrimedIds) else None


def uninstall() -> None:
    """Stop tracing (the instrumentations too)."""
    global _tracer, _provider
    if _provider is None:
        return
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    HTTPXClientInstrumentor().uninstrument()
    AsyncPGInstrumentor().uninstrument()  # type: ignore[no-untyped-call]
    _tracer = _provider = _primed = None


def instrument_app(app: Any) -> None:
    """Server spans for the HTTP API (a caller's ``traceparent`` becomes their parent)."""
    if _provider is None:
        return
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    FastAPIInstrumentor.instrument_app(app, tracer_provider=_provider,
                                       excluded_urls="healthz,readyz,metrics,ui/static")


async def _on_http_request(span: trace.Span, request: Any) -> None:
    """Every connector call names the idempotency key of the step that made it."""
    key = _idempotency_key.get()
    if key is not None and span.is_recording():
        span.set_attribute("hub.idempotency_key", key)


# -- the spans ---------------------------------------------------------------------------
def consuming(topic: str, partition: int, offset: int, key: str | None, subscriber: str,
              group: str, headers: Mapping[str, str],
              event_id: str | None) -> contextlib.AbstractContextManager[Any]:
    """A subscriber handling one record (messaging semantic conventions), continuing the
    trace of the record's ``traceparent`` header."""
    if _tracer is None:
        return _OFF
    return _Consuming(_tracer, topic, partition, offset, key, subscriber, group, headers,
                      event_id)


class _Consuming:
    """The record's span, current while its subscriber runs. A class, not the SDK's
    ``start_as_current_span``: three generator context managers per record were a third of
    the cost of tracing an unsampled one."""

    __slots__ = ("_args", "_left", "_span", "_token", "_tracer")

    def __init__(self, tracer: trace.Tracer, *args: Any) -> None:
        self._tracer = tracer
        self._args = args

    def __enter__(self) -> trace.Span:
        topic, partition, offset, key, subscriber, group, headers, event_id = self._args
        # most records carry no trace: then the global propagators have nothing to read
        name = f"process {topic}"
        if "traceparent" in headers or "baggage" in headers:
            span = self._tracer.start_span(name, context=propagate.extract(headers),
                                           kind=SpanKind.CONSUMER)
        else:
            span = _root(self._tracer, name, SpanKind.CONSUMER)
        self._span = span
        self._left = _left_out_record.set(None if span.is_recording()
                                          else span.get_span_context())
        if span.is_recording():  # most are not; no sampler of ours reads these
            span.set_attributes({
                "messaging.system": "kafka", "messaging.operation.type": "process",
                "messaging.operation.name": "process", "messaging.destination.name": topic,
                "messaging.destination.partition.id": str(partition),
                "messaging.kafka.offset": offset, "messaging.consumer.group.name": group,
                "hub.subscriber": subscriber})
            if key is not None:
                span.set_attribute("messaging.kafka.message.key", key)
            if event_id is not None:
                span.set_attribute("messaging.message.id", event_id)
        self._token = otel_context.attach(trace.set_span_in_context(span))
        return span

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: object) -> None:
        otel_context.detach(self._token)
        _left_out_record.reset(self._left)
        span = self._span
        if exc is not None and span.is_recording():
            if isinstance(exc, Exception):
                span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"[:300]))
        span.end()


def _root(tracer: trace.Tracer, name: str, kind: SpanKind) -> trace.Span:
    """A root span; one the sampler leaves out costs no SDK span (``PrimedIds``)."""
    ids = _primed
    if ids is None or _provider is None or trace.get_current_span().get_span_context().is_valid:
        return tracer.start_span(name, kind=kind)  # (under a current span: its child)
    trace_id = ids.generate_trace_id()
    decision = _provider.sampler.should_sample(None, trace_id, name, kind)
    if not decision.decision.is_sampled():  # type: ignore[no-untyped-call]
        return trace.NonRecordingSpan(trace.SpanContext(
            trace_id, ids.generate_span_id(), is_remote=False,
            trace_flags=trace.TraceFlags(trace.TraceFlags.RANDOM_TRACE_ID),
            trace_state=decision.trace_state))
    token = ids.prime(trace_id)
    try:
        return tracer.start_span(name, kind=kind)
    finally:
        ids.unprime(token)


def _traceparent(ctx: trace.SpanContext) -> str:
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


def _left_out(ctx: trace.SpanContext) -> bool:
    """A valid context the sampler left out: nothing under it is recorded."""
    return ctx.is_valid and not ctx.trace_flags.sampled


def starting(trigger: dict[str, Any] | None, workflow: str, execution_id: str,
             transaction_id: str) -> dict[str, Any] | None:
    """The durable start's span (a child of what is current: the record being handled, the
    API request; else of the trigger's ``traceparent``); returns the trigger with that
    span's context recorded in it, which the execution's steps continue. Off: the trigger
    unchanged."""
    if _tracer is None:
        return trigger
    left = _left_out_record.get()
    if left is not None:  # the record being handled was sampled out: so is its start
        return {**(trigger or {}), TRACE_KEY: _traceparent(left)}
    parent = None  # what is current; else the trigger's own traceparent (a direct start)
    current = trace.get_current_span().get_span_context()
    upstream = (trigger or {}).get("traceparent")
    if isinstance(upstream, str) and not current.is_valid:
        parent = _W3C.extract({"traceparent": upstream})
        current = trace.get_current_span(parent).get_span_context()
    if _left_out(current):  # the execution carries the unsampled context on, unchanged
        return {**(trigger or {}), TRACE_KEY: _traceparent(current)}
    with _tracer.start_as_current_span(f"start {workflow}", context=parent, attributes={
            "hub.workflow": workflow, "hub.execution_id": execution_id,
            "hub.transaction_id": transaction_id}):
        carrier: dict[str, str] = {}
        _W3C.inject(carrier)
    return {**(trigger or {}), TRACE_KEY: carrier["traceparent"]} if carrier else trigger


def execution_context(trigger: Mapping[str, Any] | None) -> otel_context.Context:
    """The parent of an execution's step spans: its start's recorded context, else the
    upstream ``traceparent`` (an execution started before tracing was on), else none."""
    trigger = trigger or {}
    value = trigger.get(TRACE_KEY) or trigger.get("traceparent")
    if not isinstance(value, str):
        return otel_context.Context()
    return _W3C.extract({"traceparent": value}, context=otel_context.Context())


@contextlib.contextmanager
def _step(tracer: trace.Tracer, ctx: StepContext) -> Iterator[trace.Span]:
    phase = "compensate" if ctx.compensating else "step"
    parent = execution_context(ctx.trigger)
    unsampled = trace.get_current_span(parent)
    if _left_out(unsampled.get_span_context()):
        # current, so the calls the step makes are left out too (and carry its traceparent)
        attached = otel_context.attach(parent)
        try:
            yield unsampled
        finally:
            otel_context.detach(attached)
        return
    token = _idempotency_key.set(ctx.idempotency_key)
    try:
        with tracer.start_as_current_span(
                f"{phase} {ctx.workflow}.{ctx.step}", context=parent,
                attributes={
                    "hub.workflow": ctx.workflow, "hub.step": ctx.step,
                    "hub.attempt": ctx.attempt, "hub.execution_id": ctx.execution_id,
                    "hub.compensating": ctx.compensating,
                    "hub.idempotency_key": ctx.idempotency_key}) as span:
            try:
                yield span
            except asyncio.CancelledError:  # not an Exception, so the SDK would not say
                span.set_status(Status(StatusCode.ERROR, "cut: the attempt was cancelled "
                                       "(its worker stopped, or its lease was lost)"))
                raise
    finally:
        _idempotency_key.reset(token)


def step_attempt(ctx: StepContext) -> contextlib.AbstractContextManager[trace.Span | None]:
    """One attempt of a step (or of its compensation): a child of the execution's start,
    whichever worker runs it, and the parent of the connector calls it makes."""
    if _tracer is None:
        return _OFF
    return _step(_tracer, ctx)


def mark_failed(span: trace.Span | None, message: str | None) -> None:
    """An attempt that returned a permanent failure (it raised nothing)."""
    if span is not None:
        span.set_status(Status(StatusCode.ERROR, (message or "permanent failure")[:300]))


def current_traceparent() -> str | None:
    """The current span's ``traceparent`` (to pass on), or None when off or outside one."""
    if _tracer is None:
        return None
    carrier: dict[str, str] = {}
    _W3C.inject(carrier)
    return carrier.get("traceparent")


def publishing(topic: str, headers: MutableMapping[str, str], event_id: str,
               key: str | None) -> trace.Span | None:
    """The outbox relay's send of one event: a child of the step that emitted it (its
    ``traceparent`` header), which the published record then carries on."""
    if _tracer is None:
        return None
    parent = propagate.extract(headers)
    if _left_out(trace.get_current_span(parent).get_span_context()):
        return None  # the record carries its step's unsampled traceparent on, as it is
    attributes: dict[str, Any] = {
        "messaging.system": "kafka", "messaging.operation.type": "send",
        "messaging.operation.name": "send", "messaging.destination.name": topic,
        "messaging.message.id": event_id,
    }
    if key is not None:
        attributes["messaging.kafka.message.key"] = key
    span = _tracer.start_span(f"send {topic}", context=parent,
                              kind=SpanKind.PRODUCER, attributes=attributes)
    propagate.inject(headers, context=trace.set_span_in_context(span))
    return span


def published(span: trace.Span | None, error: BaseException | None) -> None:
    if span is None:
        return
    if error is not None:
        span.set_status(Status(StatusCode.ERROR, repr(error)[:300]))
    span.end()


def add_trace_ids(_logger: WrappedLogger, _method: str, event: EventDict) -> EventDict:
    """structlog processor: the current span's trace and span ids, so a log line leads to
    its trace."""
    if _tracer is None:
        return event
    ctx = trace.get_current_span().get_span_context()
    if ctx.is_valid:
        event.setdefault("trace_id", format(ctx.trace_id, "032x"))
        event.setdefault("span_id", format(ctx.span_id, "016x"))
    return event


def trace_id_of(trigger: Mapping[str, Any] | None) -> str | None:
    """The trace id an execution's spans carry (for a link to a trace UI), if it has one."""
    for name in (TRACE_KEY, "traceparent"):
        value = (trigger or {}).get(name)
        if isinstance(value, str):
            parts = value.split("-")
            if len(parts) == 4 and len(parts[1]) == 32 and parts[1] != "0" * 32:
                try:
                    int(parts[1], 16)
                except ValueError:
                    continue
                return parts[1].lower()
    return None
