"""Spans along the lineage, in process: the SDK's in-memory exporter (a real SDK component)
collects what the hub's spans would send to a collector."""

from __future__ import annotations

import asyncio
import json
import re
import urllib.request
from collections.abc import Iterator
from typing import Any

import asyncpg
import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON
from opentelemetry.trace import SpanKind, StatusCode
from pydantic import BaseModel

from hub import (
    Hub,
    StepContext,
    StepResponse,
    WorkflowResponse,
    create_step,
    create_workflow,
    tracing,
)
from hub.api.console._trace import trace_url
from hub.settings import ApiSettings
from hub.tracing_sampler import PrimedIds, StatementsInTraces

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
UPSTREAM_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{UPSTREAM_SPAN}-01"

SECOND: list[tuple[str, int]] = []  # (worker, attempt) of each run of otel-second
STARTED = asyncio.Event()


class Order(BaseModel):
    id: str


async def _first(order: Order, ctx: StepContext) -> str:
    return f"first:{order.id}"


async def _second(first: str, ctx: StepContext) -> str:
    SECOND.append((ctx.container.resolve("hub").settings.worker_id, ctx.attempt))
    if len(SECOND) == 1:
        STARTED.set()
        await asyncio.Event().wait()  # its worker goes away while it runs
    return "second"


@create_workflow("otel-handover")
def otel_handover(order: Order) -> WorkflowResponse:
    return WorkflowResponse(create_step("otel-second", _second)(
        create_step("otel-first", _first)(order)))


async def _undo(value: str, ctx: StepContext) -> None:
    return None


async def _refuse(value: str, ctx: StepContext) -> StepResponse[str]:
    return StepResponse.permanent_failure("the shop said no")


@create_workflow("otel-rollback")
def otel_rollback(order: Order) -> WorkflowResponse:
    return WorkflowResponse(create_step("otel-refused", _refuse)(
        create_step("otel-done", _first, compensate=_undo)(order)))


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Tracing on for one test, into memory; off again after it."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=StatementsInTraces(), id_generator=PrimedIds())
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.install(provider)
    try:
        yield exporter
    finally:
        tracing.uninstall()
        provider.shutdown()


def _hex(span: ReadableSpan, parent: bool = False) -> str | None:
    ctx = span.parent if parent else span.context
    if ctx is None:
        return None
    return format(ctx.span_id, "016x")


def _named(spans: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return sorted((s for s in spans if s.name == name), key=lambda s: s.start_time or 0)


def _worker(dsn: str, schema: str, name: str, **kw: Any) -> Hub:
    return Hub(dsn, schema=schema, worker_id=name, lease_seconds=1.0, poll_interval=0.1, **kw)


async def test_a_recovery_on_another_worker_continues_the_executions_trace(
        dsn: str, schema: str, spans: InMemorySpanExporter) -> None:
    SECOND.clear()
    STARTED.clear()
    async with _worker(dsn, schema, "starter", execute=False) as starter:
        run = await starter.start("otel-handover", {"id": "o-1"}, wait=False,
                                  trigger={"kind": "test", "traceparent": TRACEPARENT})
        assert run.trigger is not None and run.trigger["traceparent"] == TRACEPARENT
        async with _worker(dsn, schema, "worker-a"):
            await asyncio.wait_for(STARTED.wait(), 30)
        # worker-a is gone mid-step; worker-b takes the execution over from the store
        async with _worker(dsn, schema, "worker-b") as b:
            done = await b.wait(run.id, timeout=30)
    assert done.result == "second"
    assert [w for w, _ in SECOND] == ["worker-a", "worker-b"]

    finished = spans.get_finished_spans()
    (start,) = _named(finished, "start otel-handover")
    assert format(start.context.trace_id, "032x") == TRACE_ID, "continues the upstream trace"
    assert _hex(start, parent=True) == UPSTREAM_SPAN
    stored = await stored_trigger(dsn, schema, run.id)
    assert stored["trace"] == f"00-{TRACE_ID}-{_hex(start)}-01", "the start's context is stored"

    first = _named(finished, "step otel-handover.otel-first")
    second = _named(finished, "step otel-handover.otel-second")
    assert len(first) == 1 and len(second) == 2, [s.name for s in finished]
    for step in [*first, *second]:
        assert format(step.context.trace_id, "032x") == TRACE_ID
        assert _hex(step, parent=True) == _hex(start), f"{step.name} is a child of the start"
        assert step.attributes is not None
        assert step.attributes["hub.execution_id"] == run.id
        assert step.attributes["hub.idempotency_key"] == f"{run.id}:{step.attributes['hub.step']}"
    cut, taken_over = second
    assert cut.status.status_code == StatusCode.ERROR, "the attempt cut on worker-a says so"
    assert taken_over.status.status_code != StatusCode.ERROR


async def stored_trigger(dsn: str, schema: str, execution_id: str) -> dict[str, Any]:
    conn = await asyncpg.connect(dsn)
    try:
        raw = await conn.fetchval(f"SELECT trigger FROM {schema}.execution WHERE id = $1::uuid",
                                  execution_id)
        return dict(json.loads(raw))
    finally:
        await conn.close()


async def test_a_compensation_is_a_span_of_the_same_trace(
        hub: Hub, spans: InMemorySpanExporter) -> None:
    run = await hub.start("otel-rollback", {"id": "o-2"}, raise_on_error=False,
                          trigger={"kind": "test", "traceparent": TRACEPARENT})
    assert run.status == "compensated", run
    finished = spans.get_finished_spans()
    (start,) = _named(finished, "start otel-rollback")
    (refused,) = _named(finished, "step otel-rollback.otel-refused")
    (undo,) = _named(finished, "compensate otel-rollback.otel-done")
    assert refused.status.status_code == StatusCode.ERROR
    assert refused.status.description == "the shop said no"
    assert undo.attributes is not None and undo.attributes["hub.compensating"] is True
    assert undo.attributes["hub.idempotency_key"] == f"{run.id}:otel-done:compensate"
    assert {format(s.context.trace_id, "032x") for s in (start, refused, undo)} == {TRACE_ID}
    assert _hex(undo, parent=True) == _hex(start)


async def test_with_tracing_off_nothing_is_recorded_and_the_trigger_is_as_given(
        hub: Hub) -> None:
    assert not tracing.enabled()
    run = await hub.start("otel-rollback", {"id": "o-3"}, raise_on_error=False,
                          trigger={"kind": "test", "traceparent": TRACEPARENT})
    assert run.trigger == {"kind": "test", "traceparent": TRACEPARENT}
    assert tracing.current_traceparent() is None


async def test_only_statements_inside_a_hub_span_are_traced(
        hub: Hub, spans: InMemorySpanExporter) -> None:
    await hub.store.pool.fetchval("SELECT 1")  # a background query: no trace of its own
    assert not [s for s in spans.get_finished_spans() if s.parent is None and s.name != "x"]
    tracer = tracing._tracer
    assert tracer is not None
    with tracer.start_as_current_span("x"):
        await hub.store.pool.fetchval("SELECT 2")
    statements = [s for s in spans.get_finished_spans() if s.name != "x"]
    assert len(statements) == 1 and statements[0].parent is not None, statements


def test_log_lines_inside_a_span_carry_its_trace_and_span_ids(
        spans: InMemorySpanExporter) -> None:
    assert tracing.add_trace_ids(None, "info", {"event": "outside"}) == {"event": "outside"}
    tracer = tracing._tracer
    assert tracer is not None
    with tracer.start_as_current_span("x") as span:
        line = tracing.add_trace_ids(None, "info", {"event": "inside"})
    assert line["trace_id"] == format(span.get_span_context().trace_id, "032x")
    assert line["span_id"] == format(span.get_span_context().span_id, "016x")


def test_tracing_is_wanted_only_with_an_endpoint_and_not_disabled() -> None:
    assert not tracing.wanted({})
    assert tracing.wanted({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"})
    assert tracing.wanted({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"})
    assert not tracing.wanted({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318",
                               "OTEL_SDK_DISABLED": "true"})
    assert not tracing.wanted({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318",
                               "OTEL_TRACES_EXPORTER": "none"})


def test_the_console_links_an_execution_to_its_trace_when_a_trace_ui_is_set() -> None:
    ui = "http://127.0.0.1:16686/trace/{trace_id}"
    started = {"traceparent": TRACEPARENT, "trace": f"00-{'ab' * 16}-{'cd' * 8}-01"}
    assert trace_url(ui, started) == f"http://127.0.0.1:16686/trace/{'ab' * 16}"
    assert trace_url(ui, {"traceparent": TRACEPARENT}) == \
        f"http://127.0.0.1:16686/trace/{TRACE_ID}"
    assert trace_url(ui, {"kind": "api"}) is None
    assert trace_url(ui, {"traceparent": "00-zz-yy-01"}) is None
    assert trace_url(None, started) is None


def test_a_trace_ui_address_without_its_placeholder_is_refused() -> None:
    with pytest.raises(ValueError, match=r"\{trace_id\} placeholder"):
        ApiSettings(trace_ui_url="http://jaeger:16686/search")
    with pytest.raises(ValueError, match="http"):
        ApiSettings(trace_ui_url="javascript:alert(1)//{trace_id}")


async def test_the_execution_page_links_to_the_trace_ui(hub: Hub) -> None:
    from hub.api.app import create_app
    from hub.api.keys import create_key
    from hub.runtime.subscriber import SubscriberRegistry
    from hub.settings import KafkaSettings
    from tests.support.console import serve

    key = (await create_key(hub.store, "trace-reader", ["read"])).token
    run = await hub.start("otel-rollback", {"id": "o-4"}, raise_on_error=False,
                          trigger={"kind": "test", "traceparent": TRACEPARENT})
    ui = "http://127.0.0.1:16686/trace/{trace_id}"
    for settings, link in [(ApiSettings(trace_ui_url=ui), True), (ApiSettings(), False)]:
        app = create_app(hub, settings=settings, kafka=KafkaSettings(bootstrap=None),
                         subscribers=SubscriberRegistry())
        async with serve(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as client:
            login = await client.get("/ui/login")
            nonce = re.search(r'name="login_nonce" value="([^"]+)"', login.text)
            assert nonce is not None
            r = await client.post("/ui/login", data={"api_key": key,
                                                     "login_nonce": nonce.group(1),
                                                     "next": f"/ui/executions/{run.id}"})
            page = await client.get(r.headers["location"])
        assert page.status_code == 200
        href = f'href="http://127.0.0.1:16686/trace/{TRACE_ID}"'
        assert (href in page.text) is link, page.text[-2000:]


async def test_a_run_started_through_the_api_continues_the_callers_trace(
        hub: Hub, spans: InMemorySpanExporter) -> None:
    from hub.api.app import create_app
    from hub.api.keys import create_key
    from hub.runtime.subscriber import SubscriberRegistry
    from hub.settings import KafkaSettings
    from tests.support.console import serve

    key = (await create_key(hub.store, "trace-runner", ["run"])).token
    app = create_app(hub, settings=ApiSettings(), kafka=KafkaSettings(bootstrap=None),
                     subscribers=SubscriberRegistry())
    async with serve(app) as url:
        # urllib: httpx is instrumented here, and would send its own span as the parent
        request = urllib.request.Request(
            f"{url}/workflows/otel-rollback/runs?wait=true", method="POST",
            data=json.dumps({"input": {"id": "o-5"}}).encode(),
            headers={"Authorization": f"Bearer {key}", "traceparent": TRACEPARENT,
                     "Content-Type": "application/json"})
        with await asyncio.to_thread(urllib.request.urlopen, request, timeout=30) as reply:
            assert reply.status == 200
    finished = spans.get_finished_spans()
    (start,) = _named(finished, "start otel-rollback")
    (server,) = [s for s in finished if s.kind == SpanKind.SERVER]
    assert server.name.startswith("POST /workflows/"), server.name
    assert _hex(server, parent=True) == UPSTREAM_SPAN, "the server span continues the caller's"
    by_id = {_hex(s): s for s in finished}
    chain, span = [], start
    while span.parent is not None and _hex(span, parent=True) in by_id:
        span = by_id[_hex(span, parent=True)]
        chain.append(span.name)
    assert span is server, chain  # the start happened inside the request
    assert format(start.context.trace_id, "032x") == TRACE_ID


HOSTILE_TRACEPARENTS = [
    "garbage", "", f"00-{'0' * 32}-{'0' * 16}-01",  # all-zero ids are invalid by the spec
    f"00-{TRACE_ID}\x00-{UPSTREAM_SPAN}-01", f"00-{TRACE_ID}-{UPSTREAM_SPAN}-01\ud800",
    f"ff-{TRACE_ID}-{UPSTREAM_SPAN}-01", "00-" + "a" * 10_000,
]


@pytest.mark.parametrize("bad", HOSTILE_TRACEPARENTS)
async def test_a_malformed_traceparent_starts_a_trace_of_its_own_and_the_run_goes_on(
        hub: Hub, spans: InMemorySpanExporter, bad: str) -> None:
    from hub.runtime.subscriber import SubscriberContext

    headers = {"traceparent": bad}
    with tracing.consuming("t", 0, 1, None, "sub", "group", headers, None):
        consumed = tracing.current_traceparent()
    assert consumed is not None and TRACE_ID not in consumed
    (process,) = _named(spans.get_finished_spans(), "process t")
    assert process.parent is None, "nothing continued from a malformed header"
    ctx = SubscriberContext(hub=hub, subscriber="sub", topic="t", partition=0, offset=1,
                            key=None, timestamp=0, headers=headers, event_id=None,
                            attempt=1, replay=False)
    assert "traceparent" not in ctx.trigger, "never stored, never refusing the start"
    run = await hub.start("otel-rollback", {"id": f"o-bad-{len(bad)}"}, raise_on_error=False,
                          trigger=ctx.trigger)
    assert run.status == "compensated", run
    finished = spans.get_finished_spans()
    (start,) = _named(finished, "start otel-rollback")
    assert start.parent is None
    steps = [s for s in finished if s.name.startswith(("step ", "compensate "))]
    assert len(steps) == 3 and {s.context.trace_id for s in steps} == {start.context.trace_id}


def test_a_well_formed_traceparent_is_carried_in_the_events_trigger(hub: Hub) -> None:
    from hub.runtime.subscriber import SubscriberContext

    ctx = SubscriberContext(hub=hub, subscriber="sub", topic="t", partition=0, offset=1,
                            key=None, timestamp=0, headers={"traceparent": TRACEPARENT},
                            event_id=None, attempt=1, replay=False)
    assert ctx.trigger["traceparent"] == TRACEPARENT
    assert tracing.well_formed_traceparent(TRACEPARENT + "\n") is None


class _Counting(StatementsInTraces):
    """The hub's sampler, noting the name of every span it is asked about."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[str] = []

    def should_sample(self, parent_context: Any, trace_id: int, name: str,
                      *args: Any, **kw: Any) -> Any:
        self.asked.append(name)
        return super().should_sample(parent_context, trace_id, name, *args, **kw)


async def test_below_an_unsampled_trace_no_span_is_made_and_its_context_is_carried_on(
        hub: Hub) -> None:
    """An event the sampler left out costs no span per stage (the start, each attempt, each
    compensation): its trace context is carried on as it is, so all under it stays out."""
    sampler = _Counting()
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=sampler)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.install(provider)
    try:
        unsampled = f"00-{TRACE_ID}-{UPSTREAM_SPAN}-00"
        run = await hub.start("otel-rollback", {"id": "o-9"}, raise_on_error=False,
                              trigger={"kind": "test", "traceparent": unsampled})
        with tracing.consuming("orders", 0, 7, None, "s", "g", {"traceparent": unsampled},
                               "e-1") as span:
            assert not span.is_recording()
            inside = tracing.starting({"kind": "event"}, "otel-rollback", "x", "t")
    finally:
        tracing.uninstall()
        provider.shutdown()
    assert run.status == "compensated"
    assert run.trigger[tracing.TRACE_KEY] == unsampled, "carried on, unchanged"
    assert inside is not None and inside[tracing.TRACE_KEY].split("-")[1] == TRACE_ID
    assert inside[tracing.TRACE_KEY].endswith("-00")
    made = [n for n in sampler.asked if n.split()[0] in ("start", "step", "compensate")]
    assert made == [], f"spans made below an unsampled trace: {made}"
    assert exporter.get_finished_spans() == ()


class _Deciding(StatementsInTraces):
    """A sampler whose answer the test sets, noting each trace id it is asked about."""

    def __init__(self, keep: bool) -> None:
        super().__init__(ALWAYS_ON if keep else ALWAYS_OFF)
        self.ids: list[int] = []

    def should_sample(self, parent_context: Any, trace_id: int, *args: Any,
                      **kw: Any) -> Any:
        self.ids.append(trace_id)
        return super().should_sample(parent_context, trace_id, *args, **kw)


class _Started(SpanProcessor):
    def __init__(self) -> None:
        self.names: list[str] = []

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        self.names.append(span.name)


def _provider(keep: bool) -> tuple[TracerProvider, _Deciding, _Started]:
    sampler, started = _Deciding(keep), _Started()
    provider = TracerProvider(sampler=sampler, id_generator=PrimedIds())
    provider.add_span_processor(started)
    return provider, sampler, started


def test_a_record_the_sampler_leaves_out_is_carried_on_with_the_id_it_was_sampled_by() -> None:
    provider, sampler, started = _provider(keep=False)
    tracing.install(provider)
    try:
        with tracing.consuming("orders", 0, 7, None, "s", "g", {}, "e-1") as span:
            assert not span.is_recording()
            inside = tracing.starting({"kind": "event"}, "wf", "x", "t")
        after = tracing.starting({"kind": "api"}, "wf", "y", "u")
    finally:
        tracing.uninstall()
        provider.shutdown()
    ctx = span.get_span_context()
    assert ctx.is_valid and sampler.ids[0] == ctx.trace_id, "asked once, about its own id"
    assert started.names == [], "nothing recorded"
    assert inside is not None
    assert inside[tracing.TRACE_KEY] == f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-02"
    assert after is not None and tracing.TRACE_KEY in after, "outside the record: its own"
    assert after[tracing.TRACE_KEY] != inside[tracing.TRACE_KEY]


def test_a_record_the_sampler_keeps_has_the_trace_id_it_was_sampled_by() -> None:
    provider, sampler, started = _provider(keep=True)
    tracing.install(provider)
    try:
        with tracing.consuming("orders", 0, 8, None, "s", "g", {}, "e-2") as span:
            assert span.is_recording()
        tracer = provider.get_tracer("test")
        with tracer.start_as_current_span("outer") as outer, \
                tracing.consuming("orders", 0, 9, None, "s", "g", {}, "e-3") as child:
            pass
    finally:
        tracing.uninstall()
        provider.shutdown()
    assert sampler.ids[0] == sampler.ids[1] == span.get_span_context().trace_id, (
        "the SDK's span got the id the hub asked the sampler about")
    assert started.names[0] == "process orders"
    assert child.get_span_context().trace_id == outer.get_span_context().trace_id, (
        "under a current span, the record's span is its child")
