"""One order's trace, read back from a real Jaeger: a worker exporting over OTLP (configured
by the standard variables only) consumes an ``order.placed`` carrying a ``traceparent`` and
fulfils it through the sandboxes; the whole lineage is one trace, in the expected tree."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from hub.sandbox import SandboxServer
from tests.conftest import ROOT, broker_session_ms, worker_env
from tests.support.jaeger import Jaeger, start_jaeger
from tests.support.workers import workers

# the first run on a machine builds Jaeger (minutes, more on a loaded one): past the default
pytestmark = [pytest.mark.slow, pytest.mark.broker, pytest.mark.timeout(3600)]

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
UPSTREAM_SPAN = "b7ad6b7169203331"

# reserve-stock is a map over the order's lines: its one line's spans carry the item's id
STEPS = ("open-fulfilment", "validate-order", "reserve-stock[SKU-008]", "authorize-payment",
         "create-sales-order", "sync-crm", "capture-payment", "publish-order-confirmed")
CALLS = {"reserve-stock[SKU-008]": "odoo", "authorize-payment": "stripe",
         "create-sales-order": "odoo", "sync-crm": "hubspot", "capture-payment": "stripe"}


@pytest.fixture(scope="session")
def jaeger(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Jaeger]:
    """Jaeger on loopback for the session (built by scripts/install-jaeger if missing)."""
    server = start_jaeger(tmp_path_factory.mktemp("jaeger"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def traced_worker(dsn: str, schema: str, prefix: str, kafka_bootstrap: str,
                        sandboxes: SandboxServer, jaeger: Jaeger,
                        ) -> AsyncIterator[subprocess.Popen[bytes]]:
    env = worker_env(dsn, schema, "workflows", **{
        "HUB_WORKER_ID": f"{prefix}-traced", "HUB_POLL_INTERVAL": "0.2",
        "HUB_KAFKA_BOOTSTRAP": kafka_bootstrap, "HUB_KAFKA_GROUP": f"{prefix}-hub",
        "HUB_KAFKA_TOPIC_PREFIX": f"{prefix}.", "HUB_KAFKA_TOPICS_FILE": str(ROOT / "topics.yaml"),
        "HUB_KAFKA_SESSION_TIMEOUT_MS": str(broker_session_ms()),
        "OTEL_EXPORTER_OTLP_ENDPOINT": jaeger.otlp_endpoint,
        "OTEL_SERVICE_NAME": f"hub-{prefix}", "OTEL_BSP_SCHEDULE_DELAY": "100",
    })
    for name in ("OTEL_SDK_DISABLED", "OTEL_TRACES_EXPORTER", "OTEL_TRACES_SAMPLER"):
        env.pop(name, None)
    async with workers(lambda _name: env) as ws:
        yield await ws.start(f"{prefix}-traced")


def _tags(span: dict[str, Any]) -> dict[str, Any]:
    return {t["key"]: t["value"] for t in span.get("tags", [])}


def _parent(span: dict[str, Any]) -> str | None:
    refs = [r for r in span.get("references", []) if r["refType"] == "CHILD_OF"]
    return refs[0]["spanID"] if refs else None


async def _trace_with(jaeger: Jaeger, trace_id: str, name: str,
                      timeout: float = 120.0) -> dict[str, Any]:
    """The trace once it holds a span named ``name`` (spans arrive in batches)."""
    deadline = time.monotonic() + timeout
    while True:
        found = await asyncio.to_thread(jaeger.trace, trace_id)
        if found and any(s["operationName"] == name for s in found["spans"]):
            return found
        assert time.monotonic() < deadline, (
            f"no span {name!r} in trace {trace_id} after {timeout}s: "
            f"{sorted(s['operationName'] for s in (found or {}).get('spans', []))}")
        await asyncio.sleep(0.2)


async def test_an_orders_lineage_is_one_trace_in_jaeger(
        traced_worker: subprocess.Popen[bytes], jaeger: Jaeger, kafka_bootstrap: str,
        prefix: str) -> None:
    tag = os.urandom(3).hex()
    order = {"schema_version": 1, "id": f"ord-trace-{tag}",
             "customer_email": f"trace-{tag}@example.com", "customer_name": "Grace Hopper",
             "currency": "EUR", "lines": [{"sku": "SKU-008", "quantity": 1, "unit_price": 990}],
             "total": 990, "payment_method": "pm_card_visa"}
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        meta = await producer.send_and_wait(
            f"{prefix}.order.placed", json.dumps(order).encode(), key=order["id"].encode(),
            headers=[("traceparent", f"00-{TRACE_ID}-{UPSTREAM_SPAN}-01".encode())])
    finally:
        await producer.stop()

    # the confirmation's record carries the trace on: the ship-order run consumes it
    found = await _trace_with(jaeger, TRACE_ID, f"process {prefix}.order.confirmed")
    spans = found["spans"]
    assert {s["traceID"] for s in spans} == {TRACE_ID}
    by_name: dict[str, list[dict[str, Any]]] = {}
    for s in spans:
        by_name.setdefault(s["operationName"], []).append(s)

    (consume,) = by_name[f"process {prefix}.order.placed"]
    assert _parent(consume) == UPSTREAM_SPAN, "continues the record's traceparent"
    tags = _tags(consume)
    assert tags["messaging.destination.name"] == f"{prefix}.order.placed"
    assert tags["messaging.destination.partition.id"] == str(meta.partition)
    assert tags["messaging.kafka.offset"] == meta.offset
    assert tags["messaging.kafka.message.key"] == order["id"]
    assert tags["hub.subscriber"] == "on_order_placed"
    assert tags["span.kind"] == "consumer"

    (start,) = by_name["start fulfil-order"]
    assert _parent(start) == consume["spanID"]
    execution_id = _tags(start)["hub.execution_id"]

    step_spans = {}
    for step in STEPS:  # every attempt (a loaded machine may time one out) is a span
        attempts = by_name[f"step fulfil-order.{step}"]
        assert sorted(_tags(a)["hub.attempt"] for a in attempts) == \
            list(range(1, len(attempts) + 1))
        for span in attempts:
            assert _parent(span) == start["spanID"], f"{step} is a child of the start"
            assert _tags(span)["hub.execution_id"] == execution_id
            step_spans[span["spanID"]] = step

    http = [s for s in spans if "http.request.method" in _tags(s) or "http.method" in _tags(s)]
    called: dict[str, set[str]] = {}
    for call in http:
        step = step_spans.get(_parent(call) or "")
        assert step is not None, f"HTTP span {call['operationName']} outside a step"
        assert _tags(call)["hub.idempotency_key"] == f"{execution_id}:{step}"
        assert _tags(call)["span.kind"] == "client"
        url = str(_tags(call).get("url.full") or _tags(call).get("http.url"))
        called.setdefault(step, set()).add(url)
    assert set(called) == set(CALLS), called  # the Stripe, Odoo and HubSpot calls

    (send,) = by_name[f"send {prefix}.order.confirmed"]
    assert step_spans[_parent(send) or ""] == "publish-order-confirmed"
    assert _tags(send)["span.kind"] == "producer"
    (shipped,) = by_name[f"process {prefix}.order.confirmed"]
    assert _parent(shipped) == send["spanID"], "the published record continues the trace"
