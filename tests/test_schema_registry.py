"""Registry-framed Avro through the real consumer on the session's broker.

No schema registry runs on this machine (Apicurio's modules are not all on the package
registry here: see README, Event formats), so the registry's answers to ``GET
/schemas/ids/{id}`` are recorded replies through ``httpx.MockTransport``; the frames are
real (fastavro's writer plus the 5-byte framing), and so are the broker, Postgres and, for
the outage, a registry address where nothing listens.
"""

from __future__ import annotations

import io
import json
import socket
from pathlib import Path

import fastavro
import httpx
import pytest
from structlog.testing import capture_logs

from hub import Hub, SubscriberContext, subscriber
from hub import wire as h
from hub.runtime.admin import consumer_lag
from hub.runtime.schema_registry import SchemaRegistry
from hub.runtime.service import KafkaRuntime
from hub.runtime.subscriber import SubscriberRegistry
from hub.runtime.wireformat import frame, split_frame
from tests.test_cloudevents import emit_cloudevent
from tests.test_consumer_trust import created, settings
from tests.test_subscribers import order, produce, read_all, until
from tests.test_wireformat import ORDER_AVRO, avro_frame, replies
from tests.workflows.orders_lite import record_order
from workflows.events import OrderPlaced

pytestmark = pytest.mark.broker


def avro_topics(tmp_path: Path, prefix: str) -> Path:
    path = tmp_path / "topics.yaml"
    path.write_text(f"""
topics:
  {prefix}.orders:
    partitions: 1
    format: avro
    event: workflows.events:OrderPlaced
    dead_letter: {prefix}.orders.dlq
  {prefix}.orders.dlq:
    partitions: 1
""")
    return path


def orders(topic: str) -> SubscriberRegistry:
    reg = SubscriberRegistry()

    @subscriber(topic, registry=reg, max_retries=0)
    async def on_avro_order(event: OrderPlaced, ctx: SubscriberContext) -> None:
        await record_order(ctx.hub).run(input=event, wait=False)

    return reg


async def transaction_ids(hub: Hub) -> set[str]:
    rows = await hub.store.list_executions(workflow="record-order", limit=100)
    return {r["transaction_id"] for r in rows}


def recorded_registry() -> SchemaRegistry:
    return SchemaRegistry("http://registry.test",
                          transport=replies({7: ("AVRO", json.dumps(ORDER_AVRO))}))


async def test_avro_records_start_runs_and_bad_frames_are_dead_lettered_with_the_reason(
        hub: Hub, kafka_bootstrap: str, prefix: str, tmp_path: Path) -> None:
    topics = await created(kafka_bootstrap, avro_topics(tmp_path, prefix))
    topic = f"{prefix}.orders"
    good = avro_frame(7, order(1))
    mismatched = order(2, total=-5)  # decodes, but the model wants total >= 0
    await produce(kafka_bootstrap, topic, [
        ("o1", good, []),
        ("o1", good, []),  # a redelivery: the same event id, no second run
        ("o9", frame(99, good[5:]), []),  # an id the registry does not know
        ("o9", json.dumps(order(9)).encode(), []),  # plain JSON on an Avro topic
        ("o9", good[:4], []),  # truncated inside the header
        ("o9", good[:-4], []),  # truncated inside the Avro record
        ("o9", b"\x00\x00\x00\x00\x00" + good[5:], []),  # schema id 0
        ("o2", avro_frame(7, mismatched), []),
        # a NUL in a string fails only its record, as in JSON (Postgres cannot store it)
        ("o8", avro_frame(7, {**order(8), "customer_email": "c8\x00@example.com"}), []),
        # a header that is not UTF-8 is data, not a failure
        ("o3", avro_frame(7, order(3)), [("x-raw", b"\xff\x00\xfe")]),
    ])
    registry = recorded_registry()
    rt = KafkaRuntime(hub, settings(kafka_bootstrap, prefix), relay=False,
                      subscribers=orders(topic), topics=topics, registry=registry)
    await rt.start()
    try:
        dead = await read_all(kafka_bootstrap, f"{prefix}.orders.dlq", 7, timeout=60)

        async def both_started() -> bool:
            return await transaction_ids(hub) == {"on_avro_order:event:o1",
                                                  "on_avro_order:event:o3"}

        await until(both_started, timeout=60)
    finally:
        await rt.stop()
        await registry.aclose()
    got = [({k: v.decode() for k, v in r.headers}) for r in dead]
    expected = [
        ("schema", "schema id 99 is not known to the registry at http://registry.test"),
        ("deserialize", "wrong magic byte 0x7b: the wire format starts with 0x00"),
        ("deserialize", "truncated frame: 4 byte(s), the wire format needs at least 5"),
        ("deserialize", "Avro payload does not decode with schema id 7: "),
        ("deserialize", "schema id 0 is out of range (1..2147483647)"),
        ("validate", "1 validation error for OrderPlaced"),
        ("handler", "input of workflow 'record-order' contains a NUL character"),
    ]
    assert [(g[h.DLQ_STAGE], g[h.DLQ_EXCEPTION_MESSAGE][:len(m)]) for g, (_, m)
            in zip(got, expected, strict=True)] == expected
    assert "total" in got[5][h.DLQ_EXCEPTION_MESSAGE]
    assert dead[0].value == frame(99, good[5:]), "the record byte for byte"
    assert registry.fetches == 2, "id 7 once (cached), id 99 once"


async def test_an_unreachable_registry_holds_the_records_and_dead_letters_none(
        hub: Hub, kafka_bootstrap: str, prefix: str, tmp_path: Path) -> None:
    topics = await created(kafka_bootstrap, avro_topics(tmp_path, prefix))
    topic = f"{prefix}.orders"
    await produce(kafka_bootstrap, topic, [("o4", avro_frame(7, order(4)), [])])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    down = SchemaRegistry(f"http://127.0.0.1:{port}", timeout_s=5)
    s_down = settings(kafka_bootstrap, prefix, batch_max_attempts=1000)
    with capture_logs() as logs:
        rt = KafkaRuntime(hub, s_down, relay=False, subscribers=orders(topic), topics=topics,
                          registry=down)
        await rt.start()
        try:
            async def retried_twice() -> bool:
                return sum(e["event"] == "batch_failed" for e in logs) >= 2

            await until(retried_twice, timeout=60)
            assert rt.consumer is not None and rt.consumer.stats["dead_lettered"] == 0
        finally:
            await rt.stop()
            await down.aclose()
    failed = [e for e in logs if e["event"] == "batch_failed"]
    assert "RegistryUnavailable" in failed[0]["error"] and f":{port}" in failed[0]["error"]
    [lag] = await consumer_lag(s_down, kafka_bootstrap, [topic])
    assert not lag.committed, "nothing committed while the registry was away"
    # the registry back: the same record goes through, nothing was dead-lettered
    registry = recorded_registry()
    rt = KafkaRuntime(hub, settings(kafka_bootstrap, prefix), relay=False,
                      subscribers=orders(topic), topics=topics, registry=registry)
    await rt.start()
    try:
        async def started() -> bool:
            return await transaction_ids(hub) == {"on_avro_order:event:o4"}

        await until(started, timeout=60)
        assert rt.consumer is not None and rt.consumer.stats["dead_lettered"] == 0
    finally:
        await rt.stop()
        await registry.aclose()


async def test_a_registry_topic_without_a_registry_url_stops_the_start(
        hub: Hub, kafka_bootstrap: str, prefix: str, tmp_path: Path) -> None:
    topics = await created(kafka_bootstrap, avro_topics(tmp_path, prefix))
    rt = KafkaRuntime(hub, settings(kafka_bootstrap, prefix), relay=False,
                      subscribers=orders(f"{prefix}.orders"), topics=topics)
    with pytest.raises(Exception, match=rf"topic '{prefix}\.orders' is in format 'avro' .* "
                                        "HUB_SCHEMA_REGISTRY_URL is not set"):
        await rt.start()


COUNT_AVRO = {"type": "record", "name": "Count", "fields": [{"name": "n", "type": "long"}]}


def subject_replies(subject: str, schema_id: int, schema: dict[str, object],
                    asked: list[str]) -> httpx.MockTransport:
    """The Confluent API's reply to GET /subjects/{subject}/versions/latest."""

    def handle(request: httpx.Request) -> httpx.Response:
        asked.append(request.url.path)
        if request.url.path != f"/subjects/{subject}/versions/latest":
            return httpx.Response(404, json={"error_code": 40401})
        return httpx.Response(200, json={"subject": subject, "version": 1, "id": schema_id,
                                         "schema": json.dumps(schema)})

    return httpx.MockTransport(handle)


async def test_the_outbox_frames_events_with_the_subjects_latest_schema_id(
        hub: Hub, kafka_bootstrap: str, prefix: str, tmp_path: Path) -> None:
    path = tmp_path / "topics.yaml"
    path.write_text(f"""
topics:
  {prefix}.counts:
    partitions: 1
    format: avro
""")
    topics = await created(kafka_bootstrap, path)
    asked: list[str] = []
    registry = SchemaRegistry("http://registry.test", transport=subject_replies(
        f"{prefix}.counts-value", 42, COUNT_AVRO, asked))
    rt = KafkaRuntime(hub, settings(kafka_bootstrap, prefix), consume=False, topics=topics,
                      registry=registry)
    await rt.start()
    try:
        await emit_cloudevent(hub).run(input={"topic": f"{prefix}.counts", "n": 7},
                                       transaction_id=f"{prefix}-count-7")
        await emit_cloudevent(hub).run(input={"topic": f"{prefix}.counts", "n": 8},
                                       transaction_id=f"{prefix}-count-8")
        bad = await emit_cloudevent(hub).run(input={"topic": f"{prefix}.counts", "n": "x"},
                                             transaction_id=f"{prefix}-count-x")
        out = await read_all(kafka_bootstrap, f"{prefix}.counts", 2, timeout=60)

        async def failed() -> list[dict[str, object]]:
            rows = await hub.store.outbox_list(state="failed", limit=100)
            return [r for r in rows if str(r["id"]) == bad.result["event_id"]]

        await until(failed, timeout=60)
        [row] = await failed()
    finally:
        await rt.stop()
        await registry.aclose()
    decoded = []
    for record in out:
        schema_id, payload = split_frame(record.value)
        decoded.append((schema_id, fastavro.schemaless_reader(
            io.BytesIO(payload), fastavro.parse_schema(COUNT_AVRO), None)))
    assert decoded == [(42, {"n": 7}), (42, {"n": 8})]
    assert asked == [f"/subjects/{prefix}.counts-value/versions/latest"], "looked up once"
    assert "does not fit the Avro schema" in str(row["last_error"])


async def test_protobuf_records_start_runs_through_the_consumer(
        hub: Hub, kafka_bootstrap: str, prefix: str, tmp_path: Path) -> None:
    from tests.test_protobuf_format import PROTO, written

    path = tmp_path / "topics.yaml"
    path.write_text(avro_topics(tmp_path, prefix).read_text().replace(
        "format: avro", "format: protobuf"))
    topics = await created(kafka_bootstrap, path)
    topic = f"{prefix}.orders"
    await produce(kafka_bootstrap, topic, [
        ("o5", written(b"\x00", "OrderPlaced", order(5)), []),
        ("o6", frame(5, b"\x02\x0a"), []),  # index path [5]: no such message
    ])
    registry = SchemaRegistry("http://registry.test",
                              transport=replies({5: ("PROTOBUF", PROTO)}))
    rt = KafkaRuntime(hub, settings(kafka_bootstrap, prefix), relay=False,
                      subscribers=orders(topic), topics=topics, registry=registry)
    await rt.start()
    try:
        [dead] = await read_all(kafka_bootstrap, f"{prefix}.orders.dlq", 1, timeout=60)

        async def succeeded() -> bool:
            rows = await hub.store.list_executions(workflow="record-order", limit=10)
            return [(r["transaction_id"], r["status"]) for r in rows] == [
                ("on_avro_order:event:o5", "succeeded")]

        await until(succeeded, timeout=60)
    finally:
        await rt.stop()
        await registry.aclose()
    reason = {k: v.decode() for k, v in dead.headers}[h.DLQ_EXCEPTION_MESSAGE]
    assert "message index path [5] names no message" in reason
    run = await hub.get_run("on_avro_order:event:o5")
    assert run.result["order"]["total"] == 1000
