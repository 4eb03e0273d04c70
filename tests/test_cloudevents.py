"""CloudEvents over Kafka: both modes in, routing by type, binary or structured out.

The records go through the real consumer on the session's broker; ``ce_id`` keys the start,
so a redelivered CloudEvent starts nothing new; a CloudEvent that misses an attribute, has
another specversion, a header that is not UTF-8, or a type without a route is dead-lettered
with the stage ``cloudevent`` and the reason.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from hub import (
    Hub,
    SubscriberContext,
    WorkflowResponse,
    create_workflow,
    emit_event_step,
    subscriber,
    transform,
)
from hub import wire as h
from hub.runtime import cloudevents as ce
from hub.runtime.formats import EventFormats
from hub.runtime.service import KafkaRuntime
from hub.runtime.subscriber import SubscriberRegistry
from hub.runtime.topics import CloudEventsSpec, TopicSpec, load_topics
from tests.test_consumer_trust import created, settings
from tests.test_subscribers import order, produce, read_all, until
from tests.workflows.orders_lite import record_order
from workflows.events import OrderPlaced

PLACED = "com.shop.order.placed"
IMPORTED = "com.shop.order.imported"


def binary(ce_id: str, data: dict[str, Any], *, type_: str = PLACED,
           **extra: bytes) -> tuple[bytes, list[tuple[str, bytes]]]:
    headers = [("ce_specversion", b"1.0"), ("ce_id", ce_id.encode()),
               ("ce_source", b"/shop/eu"), ("ce_type", type_.encode()),
               ("content-type", b"application/json")]
    headers += [(k, v) for k, v in extra.items()]
    return json.dumps(data).encode(), headers


def structured(ce_id: str, data: dict[str, Any], *, type_: str = PLACED) -> bytes:
    return json.dumps({"specversion": "1.0", "id": ce_id, "source": "/shop/eu",
                       "type": type_, "data": data}).encode()


# -- reading, without a broker -------------------------------------------------------------

def test_binary_mode_is_told_by_ce_specversion_and_structured_by_content_type() -> None:
    assert ce.mode_of([("ce_specversion", b"1.0")]) == "binary"
    assert ce.mode_of([("content-type", b"application/cloudevents+json; charset=UTF-8")]
                      ) == "structured"
    with pytest.raises(ce.CloudEventError, match="not a CloudEvent: no ce_specversion"):
        ce.mode_of([("content-type", b"application/json")])
    with pytest.raises(ce.CloudEventError, match="batched CloudEvents"):
        ce.mode_of([("content-type", b"application/cloudevents-batch+json")])


def test_missing_required_attributes_are_named() -> None:
    with pytest.raises(ce.CloudEventError,
                       match="lacks required attribute\\(s\\) source, type \\(present: id, "
                             "specversion\\)"):
        ce.binary_attributes([("ce_specversion", b"1.0"), ("ce_id", b"e1")])


def test_another_specversion_is_refused() -> None:
    with pytest.raises(ce.CloudEventError, match="specversion '0.3' is not supported"):
        ce.structured(structured("e1", {}).replace(b'"1.0"', b'"0.3"'))


def test_a_header_that_is_not_utf8_is_refused_naming_it() -> None:
    _, headers = binary("e1", {}, ce_subject=b"\xff\xfe")
    with pytest.raises(ce.CloudEventError, match="header 'ce_subject' is not UTF-8"):
        ce.binary_attributes(headers)


def test_nul_bytes_and_odd_names_in_attributes_are_refused() -> None:
    with pytest.raises(ce.CloudEventError, match="holds a NUL"):
        ce.binary_attributes(binary("e\x001", {})[1])
    with pytest.raises(ce.CloudEventError, match="attribute name 'Weird-Name'"):
        ce.structured(json.dumps({"specversion": "1.0", "id": "1", "source": "s", "type": "t",
                                  "Weird-Name": "x"}).encode())


def test_structured_data_base64_and_non_objects_are_refused() -> None:
    with pytest.raises(ce.CloudEventError, match="data_base64 is not accepted"):
        ce.structured(json.dumps({"specversion": "1.0", "id": "1", "source": "s", "type": "t",
                                  "data_base64": "AAAA"}).encode())
    with pytest.raises(ce.CloudEventError, match="not a JSON object"):
        ce.structured(b"[1, 2]")


async def test_emitted_events_are_binary_by_default_and_structured_when_declared() -> None:
    formats = EventFormats(None)
    spec = TopicSpec(name="out", cloudevents=CloudEventsSpec(source="/hub", type="order.ok"))
    value, headers = await formats.encode(spec, '{"a": 1}', {"event-id": "e9", "x": "y"}, "e9")
    got = dict(headers)
    assert value == b'{"a": 1}'
    assert (got["ce_id"], got["ce_type"], got["ce_source"], got["ce_specversion"]) == (
        b"e9", b"order.ok", b"/hub", b"1.0")
    assert got["content-type"] == b"application/json" and got["x"] == b"y"
    spec = TopicSpec(name="out", cloudevents=CloudEventsSpec(mode="structured"))
    value, headers = await formats.encode(spec, '{"a": 1}', {"ce_type": "mine"}, "e9")
    assert dict(headers)["content-type"] == b"application/cloudevents+json"
    assert json.loads(value) == {"specversion": "1.0", "id": "e9", "source": "/hub",
                                 "type": "mine", "data": {"a": 1}}


def test_a_structured_topic_in_a_registry_format_is_refused_at_load(tmp_path: Path) -> None:
    path = tmp_path / "topics.yaml"
    path.write_text("topics:\n  a:\n    format: avro\n    cloudevents:\n      mode: structured\n")
    with pytest.raises(Exception, match=r"topics.yaml:2: topics.a: .*write mode: binary"):
        load_topics(path)


# -- through the consumer ------------------------------------------------------------------

def ce_topics(tmp_path: Path, prefix: str) -> Path:
    path = tmp_path / "topics.yaml"
    path.write_text(f"""
topics:
  {prefix}.ce:
    partitions: 1
    event: workflows.events:OrderPlaced
    dead_letter: {prefix}.ce.dlq
    cloudevents:
      routes:
        {PLACED}: [on_placed]
        {IMPORTED}: [on_imported]
  {prefix}.ce.dlq:
    partitions: 1
  {prefix}.ce.out:
    partitions: 1
    cloudevents:
      source: /hub/tests
      type: com.hub.order.recorded
  {prefix}.ce.out-structured:
    partitions: 1
    cloudevents:
      mode: structured
""")
    return path


def routed_registry(topic: str, seen: dict[str, list[str]]) -> SubscriberRegistry:
    reg = SubscriberRegistry()

    @subscriber(topic, registry=reg, max_retries=0)
    async def on_placed(event: OrderPlaced, ctx: SubscriberContext) -> None:
        seen.setdefault("on_placed", []).append(event.id)
        await record_order(ctx.hub).run(input=event, wait=False)

    @subscriber(topic, registry=reg, max_retries=0)
    async def on_imported(event: OrderPlaced, ctx: SubscriberContext) -> None:
        seen.setdefault("on_imported", []).append(event.id)

    return reg


async def transaction_ids(hub: Hub) -> set[str]:
    rows = await hub.store.list_executions(workflow="record-order", limit=100)
    return {r["transaction_id"] for r in rows}


@pytest.mark.broker
async def test_cloudevents_in_both_modes_start_runs_keyed_by_their_id_and_route_by_type(
        hub: Hub, kafka_bootstrap: str, prefix: str, tmp_path: Path) -> None:
    topics = await created(kafka_bootstrap, ce_topics(tmp_path, prefix))
    topic = f"{prefix}.ce"
    seen: dict[str, list[str]] = {}
    v1, h1 = binary("ce-1", order(1))
    again, h_again = binary("ce-1", order(1))  # a redelivery: the same CloudEvent id
    await produce(kafka_bootstrap, topic, [
        ("o1", v1, h1), ("o1", again, h_again),
        ("o2", structured("ce-2", order(2)),
         [("content-type", b"application/cloudevents+json")]),
        ("o3", *binary("ce-3", order(3), type_=IMPORTED)),
    ])
    rt = KafkaRuntime(hub, settings(kafka_bootstrap, prefix), relay=False,
                      subscribers=routed_registry(topic, seen), topics=topics)
    await rt.start()
    try:
        async def handled() -> bool:
            return rt.consumer is not None and rt.consumer.stats["handled"] >= 4

        await until(handled, timeout=60)
    finally:
        await rt.stop()
    assert await transaction_ids(hub) == {"on_placed:event:ce-1", "on_placed:event:ce-2"}
    assert seen == {"on_placed": ["o1", "o1", "o2"], "on_imported": ["o3"]}
    run = await hub.get_run("on_placed:event:ce-2")
    assert run.trigger is not None and run.trigger["event_id"] == "ce-2"


@pytest.mark.broker
async def test_invalid_cloudevents_are_dead_lettered_with_the_reason_and_good_ones_flow(
        hub: Hub, kafka_bootstrap: str, prefix: str, tmp_path: Path) -> None:
    topics = await created(kafka_bootstrap, ce_topics(tmp_path, prefix))
    topic = f"{prefix}.ce"
    good, good_headers = binary("ce-ok", order(5))
    value, headers = binary("ce-x", order(6))
    no_source = [(k, v) for k, v in headers if k != "ce_source"]
    old = [(k, b"0.3" if k == "ce_specversion" else v) for k, v in headers]
    await produce(kafka_bootstrap, topic, [
        ("k", value, no_source),
        ("k", value, old),
        ("k", value, [*headers, ("ce_subject", b"\xc3\x28")]),
        ("k", *binary("ce-y", order(7), type_="com.shop.unknown")),
        ("k", value, [("content-type", b"application/json")]),
        ("k", good, good_headers),
    ])
    seen: dict[str, list[str]] = {}
    rt = KafkaRuntime(hub, settings(kafka_bootstrap, prefix), relay=False,
                      subscribers=routed_registry(topic, seen), topics=topics)
    await rt.start()
    try:
        dead = await read_all(kafka_bootstrap, f"{prefix}.ce.dlq", 5, timeout=60)

        async def good_started() -> bool:
            return "on_placed:event:ce-ok" in await transaction_ids(hub)

        await until(good_started, timeout=60)
    finally:
        await rt.stop()
    reasons = [{k: v.decode("utf-8", "replace") for k, v in r.headers} for r in dead]
    assert [r[h.DLQ_STAGE] for r in reasons] == ["cloudevent"] * 5
    messages = [r[h.DLQ_EXCEPTION_MESSAGE] for r in reasons]
    assert "lacks required attribute(s) source" in messages[0]
    assert "specversion '0.3' is not supported" in messages[1]
    assert "header 'ce_subject' is not UTF-8" in messages[2]
    assert "type 'com.shop.unknown' has no route" in messages[3]
    assert "not a CloudEvent: no ce_specversion header" in messages[4]
    assert [r.value for r in dead] == [value] * 3 + [dead[3].value, value]
    assert seen == {"on_placed": ["o5"]}


@create_workflow("emit-cloudevent")
def emit_cloudevent(inp: dict[str, Any]) -> WorkflowResponse:
    sent = emit_event_step.config(name="emit-it")(transform(
        inp, lambda i: {"topic": i["topic"], "key": "k1", "event": {"n": i["n"]},
                        "headers": i.get("headers") or {}}))
    return WorkflowResponse(sent)


@pytest.mark.broker
async def test_the_outbox_writes_cloudevents_where_the_topic_asks_for_them(
        hub: Hub, kafka_bootstrap: str, prefix: str, tmp_path: Path) -> None:
    topics = await created(kafka_bootstrap, ce_topics(tmp_path, prefix))
    rt = KafkaRuntime(hub, settings(kafka_bootstrap, prefix), consume=False, topics=topics)
    await rt.start()
    try:
        a = await emit_cloudevent(hub).run(input={"topic": f"{prefix}.ce.out", "n": 1},
                                           transaction_id=f"{prefix}-ce-1")
        b = await emit_cloudevent(hub).run(
            input={"topic": f"{prefix}.ce.out-structured", "n": 2,
                   "headers": {"ce_type": "com.hub.custom"}},
            transaction_id=f"{prefix}-ce-2")
        [out] = await read_all(kafka_bootstrap, f"{prefix}.ce.out", 1, timeout=60)
        [out_s] = await read_all(kafka_bootstrap, f"{prefix}.ce.out-structured", 1, timeout=60)
    finally:
        await rt.stop()
    hd = {k: v.decode() for k, v in out.headers}
    assert json.loads(out.value) == {"n": 1}
    assert (hd["ce_specversion"], hd["ce_id"], hd["ce_source"], hd["ce_type"]) == (
        "1.0", a.result["event_id"], "/hub/tests", "com.hub.order.recorded")
    assert hd[h.EVENT_ID] == hd["ce_id"]
    envelope = json.loads(out_s.value)
    assert dict(out_s.headers)["content-type"] == b"application/cloudevents+json"
    assert (envelope["id"], envelope["type"], envelope["data"]) == (
        b.result["event_id"], "com.hub.custom", {"n": 2})
    assert envelope["source"] == "/hub" and envelope["specversion"] == "1.0"


@pytest.mark.broker
def test_hub_publish_writes_cloudevents_to_a_cloudevents_topic(
        tmp_path: Path, kafka_bootstrap: str, prefix: str) -> None:
    import asyncio
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    topics = ce_topics(tmp_path, prefix)
    env = {**os.environ, "HUB_KAFKA_BOOTSTRAP": kafka_bootstrap, "PYTHONPATH": str(root),
           "HUB_KAFKA_TOPICS_FILE": str(topics)}
    for args in (["topics", "apply", "--file", str(topics)],
                 ["publish", f"{prefix}.ce.out", str(root / "examples" / "order.placed.json")]):
        done = subprocess.run([sys.executable, "-m", "hub", *args], env=env, cwd=root,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
    [record] = asyncio.run(read_all(kafka_bootstrap, f"{prefix}.ce.out", 1, timeout=60))
    hd = {k: v.decode() for k, v in record.headers}
    sent = json.loads((root / "examples" / "order.placed.json").read_text())
    assert (hd["ce_id"], hd["ce_type"], hd["ce_source"]) == (
        sent["id"], "com.hub.order.recorded", "/hub/tests")
    assert json.loads(record.value) == sent
