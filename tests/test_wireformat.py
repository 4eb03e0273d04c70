"""The registry wire format and the formats built on it, without a broker.

Frames are made by fastavro's writer plus the 5-byte framing (one is pinned as bytes), and
the registry's replies come through ``httpx.MockTransport`` as the Confluent API writes them
(recorded replies, not a registry: the client's error mapping, cache and bounds are what is
under test here; an unreachable registry is a real closed port).
"""

from __future__ import annotations

import asyncio
import io
import json
import socket
from typing import Any

import fastavro
import httpx
import pytest

from hub.runtime.formats import EventFormats, FormatRejected, NoRegistry
from hub.runtime.schema_registry import (
    RegistryUnavailable,
    SchemaNotFound,
    SchemaRegistry,
    SchemaUnusable,
)
from hub.runtime.topics import TopicSpec
from hub.runtime.wireformat import FrameError, frame, split_frame

ORDER_AVRO = {
    "type": "record", "name": "OrderPlaced", "namespace": "shop",
    "fields": [
        {"name": "id", "type": "string"},
        {"name": "customer_email", "type": "string"},
        {"name": "currency", "type": "string"},
        {"name": "lines", "type": {"type": "array", "items": {
            "type": "record", "name": "OrderLine", "fields": [
                {"name": "sku", "type": "string"}, {"name": "quantity", "type": "int"},
                {"name": "unit_price", "type": "int"}]}}},
        {"name": "total", "type": "long"},
    ],
}
ORDER = {"id": "o1", "customer_email": "c1@example.com", "currency": "EUR",
         "lines": [{"sku": "SKU-1", "quantity": 2, "unit_price": 500}], "total": 1000}
ORDER_JSON_SCHEMA = {"$schema": "http://json-schema.org/draft-07/schema#", "type": "object",
                     "required": ["id", "total"],
                     "properties": {"id": {"type": "string"}, "total": {"type": "integer"}}}


def avro_frame(schema_id: int, record: dict[str, Any], schema: Any = None) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, fastavro.parse_schema(schema or ORDER_AVRO), record)
    return frame(schema_id, buf.getvalue())


def replies(schemas: dict[int, tuple[str, str]], seen: list[str] | None = None,
            gate: asyncio.Event | None = None,
            asked: asyncio.Event | None = None) -> httpx.MockTransport:
    """The Confluent API's replies to GET /schemas/ids/{id} for ``schemas`` (id: type, text)."""

    async def handle(request: httpx.Request) -> httpx.Response:
        if seen is not None:
            seen.append(request.url.path)
        if asked is not None:
            asked.set()
        if gate is not None:
            await gate.wait()
        schema_id = int(request.url.path.rsplit("/", 1)[-1])
        if schema_id not in schemas:
            return httpx.Response(404, json={"error_code": 40403,
                                             "message": "Schema not found"})
        kind, text = schemas[schema_id]
        body: dict[str, Any] = {"schema": text}
        if kind != "AVRO":
            body["schemaType"] = kind
        return httpx.Response(200, json=body)

    return httpx.MockTransport(handle)


def avro_topic(**kw: Any) -> TopicSpec:
    return TopicSpec(name="shop.orders", format="avro", **kw)


# -- framing -------------------------------------------------------------------------------

def test_a_frame_is_magic_zero_a_big_endian_id_and_the_payload() -> None:
    value = avro_frame(7, ORDER)
    # pinned: what fastavro's writer and the framing produce for this record
    assert value[:5] == b"\x00\x00\x00\x00\x07"
    assert value[5:9] == b"\x04o1\x1c"  # zig-zag length 2, "o1", then the e-mail's length 14
    assert split_frame(value) == (7, value[5:])


@pytest.mark.parametrize("value", [b"", b"\x00", b"\x00\x00", b"\x00\x00\x00",
                                   b"\x00\x00\x00\x01"])
def test_a_frame_of_zero_to_four_bytes_is_truncated(value: bytes) -> None:
    with pytest.raises(FrameError, match=rf"truncated frame: {len(value)} byte\(s\)"):
        split_frame(value)


def test_a_wrong_magic_byte_is_named() -> None:
    with pytest.raises(FrameError, match="wrong magic byte 0x7b"):
        split_frame(json.dumps(ORDER).encode())  # plain JSON starts with '{'


@pytest.mark.parametrize("schema_id", [0, 2**31, 2**32 - 1])
def test_a_schema_id_out_of_range_is_refused_before_any_lookup(schema_id: int) -> None:
    value = b"\x00" + schema_id.to_bytes(4, "big") + b"payload"
    with pytest.raises(FrameError, match=f"schema id {schema_id} is out of range"):
        split_frame(value)


def test_nul_bytes_in_the_payload_are_payload() -> None:
    assert split_frame(b"\x00\x00\x00\x00\x01\x00\x00") == (1, b"\x00\x00")


# -- the registry client -------------------------------------------------------------------

async def test_concurrent_lookups_of_one_id_make_one_request_and_then_hit_the_cache() -> None:
    seen: list[str] = []
    gate, asked = asyncio.Event(), asyncio.Event()
    reg = SchemaRegistry("http://registry.test", transport=replies(
        {3: ("AVRO", json.dumps(ORDER_AVRO))}, seen, gate, asked))
    waiting = [asyncio.create_task(reg.schema(3)) for _ in range(50)]
    await asked.wait()  # the first request is out and held; the other 49 asked meanwhile
    gate.set()
    found = await asyncio.gather(*waiting)
    assert {f.id for f in found} == {3} and seen == ["/schemas/ids/3"]
    await reg.schema(3)
    assert reg.fetches == 1
    await reg.aclose()


async def test_the_cache_is_bounded_and_drops_the_least_recently_used() -> None:
    schemas = {i: ("AVRO", '"string"') for i in range(1, 6)}
    reg = SchemaRegistry("http://registry.test", cache_size=2, transport=replies(schemas))
    for i in (1, 2, 1, 3):  # 2 is the least recently used when 3 comes
        await reg.schema(i)
    assert list(reg._by_id) == [1, 3]
    await reg.aclose()


async def test_an_unknown_id_is_not_found_and_a_server_error_is_unavailable() -> None:
    async def fail(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503, text="maintenance")

    reg = SchemaRegistry("http://registry.test", transport=replies({}))
    with pytest.raises(SchemaNotFound, match="schema id 9 is not known to the registry"):
        await reg.schema(9)
    down = SchemaRegistry("http://u:secret@registry.test", transport=httpx.MockTransport(fail))
    with pytest.raises(RegistryUnavailable, match="answered 503") as caught:
        await down.schema(9)
    assert "secret" not in str(caught.value)
    await reg.aclose()
    await down.aclose()


async def test_an_unreachable_registry_is_unavailable_not_unusable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    reg = SchemaRegistry(f"http://127.0.0.1:{port}", timeout_s=5)
    with pytest.raises(RegistryUnavailable, match="unreachable while fetching schema id 1"):
        await reg.schema(1)
    assert RegistryUnavailable.retryable and not SchemaUnusable.retryable
    await reg.aclose()


async def test_a_huge_schema_from_the_registry_is_refused_after_a_bounded_read() -> None:
    huge = json.dumps({"type": "enum", "name": "E", "symbols": [f"S{i}" for i in range(300_000)]})
    reg = SchemaRegistry("http://registry.test", max_schema_bytes=1_048_576,
                         transport=replies({4: ("AVRO", huge)}))
    with pytest.raises(SchemaUnusable, match="larger than 1048576 bytes"):
        await reg.schema(4)
    await reg.aclose()


def answering(body: dict[str, Any]) -> httpx.MockTransport:
    return httpx.MockTransport(lambda _: httpx.Response(200, json=body))


async def test_a_schema_that_references_others_is_refused_naming_them() -> None:
    # the reply's shape as Confluent's API and Apicurio's ccompat write it
    addressed = {"type": "record", "name": "Order", "namespace": "shop",
                 "fields": [{"name": "ship_to", "type": "shop.Address"}]}
    body = {"schema": json.dumps(addressed), "schemaType": "AVRO",
            "references": [{"name": "shop.Address", "subject": "address-value", "version": 3}]}
    reg = SchemaRegistry("http://registry.test", transport=answering(body))
    with pytest.raises(SchemaUnusable, match=(
            r"schema id 5 references other schemas: 'shop.Address' \(subject "
            r"'address-value' version 3\); the hub decodes self-contained schemas only")):
        await reg.schema(5)
    formats = EventFormats(reg)
    with pytest.raises(FormatRejected, match="references other schemas") as caught:
        await formats.decode([], frame(5, b"\x00"), avro_topic())
    assert caught.value.stage == "schema"
    await reg.aclose()


async def test_a_subjects_latest_schema_with_references_is_refused_for_producing() -> None:
    body = {"subject": "shop.orders-value", "version": 2, "id": 8, "schemaType": "PROTOBUF",
            "schema": 'syntax = "proto3"; import "address.proto"; message Order {}',
            "references": [{"name": "address.proto", "subject": "address", "version": 1}]}
    reg = SchemaRegistry("http://registry.test", transport=answering(body))
    with pytest.raises(SchemaUnusable, match=(
            r"the latest version of subject 'shop.orders-value' references other schemas: "
            r"'address.proto' \(subject 'address' version 1\)")):
        await reg.latest("shop.orders-value")
    assert 8 not in reg._by_id  # nothing cached from a refused answer
    await reg.aclose()


async def test_an_explicit_avro_type_and_no_references_decode_as_usual() -> None:
    body = {"schema": json.dumps(ORDER_AVRO), "schemaType": "AVRO", "references": []}
    formats = EventFormats(SchemaRegistry("http://registry.test", transport=answering(body)))
    event = await formats.decode([], avro_frame(6, ORDER), avro_topic())
    assert event.payload == ORDER


async def test_basic_auth_is_sent_when_a_user_is_set() -> None:
    auth: list[str] = []

    async def handle(request: httpx.Request) -> httpx.Response:
        auth.append(request.headers.get("authorization", ""))
        return httpx.Response(200, json={"schema": '"string"'})

    reg = SchemaRegistry("http://registry.test", username="hub", password="pw",
                         transport=httpx.MockTransport(handle))
    await reg.schema(1)
    assert auth == ["Basic aHViOnB3"]
    await reg.aclose()


# -- decoding by the topic's format ----------------------------------------------------------

async def formats(schemas: dict[int, tuple[str, str]]) -> EventFormats:
    return EventFormats(SchemaRegistry("http://registry.test", transport=replies(schemas)))


async def test_an_avro_frame_decodes_to_the_record_and_its_id_to_the_event_id() -> None:
    f = await formats({7: ("AVRO", json.dumps(ORDER_AVRO))})
    event = await f.decode([], avro_frame(7, ORDER), avro_topic())
    assert event.payload == ORDER and event.event_id == "o1"


async def test_frames_that_cannot_be_decoded_are_refused_with_stage_and_reason() -> None:
    f = await formats({7: ("AVRO", json.dumps(ORDER_AVRO)),
                       8: ("JSON", json.dumps(ORDER_JSON_SCHEMA)),
                       9: ("AVRO", "{not json")})
    good = avro_frame(7, ORDER)
    cases = [
        (good[:3], "deserialize", "truncated frame: 3 byte"),
        (b"\x01" + good[1:], "deserialize", "wrong magic byte 0x01"),
        (good[:-3], "deserialize", "Avro payload does not decode with schema id 7"),
        (good + b"\x00\x00", "deserialize", "2 byte(s) left after the record"),
        (frame(404, b"x"), "schema", "schema id 404 is not known"),
        (frame(8, b"{}"), "schema", "schema id 8 is a JSON schema; topic 'shop.orders' "
                                    "declares format 'avro'"),
        (frame(9, b"x"), "schema", "schema id 9 (AVRO) cannot be parsed"),
        (b"\x00\x80\x00\x00\x00", "deserialize", "schema id 2147483648 is out of range"),
    ]
    for value, stage, reason in cases:
        with pytest.raises(FormatRejected) as caught:
            await f.decode([], value, avro_topic())
        assert (caught.value.stage, reason in str(caught.value)) == (stage, True), value


async def test_a_json_schema_frame_is_checked_against_the_registry_schema() -> None:
    f = await formats({8: ("JSON", json.dumps(ORDER_JSON_SCHEMA))})
    spec = TopicSpec(name="shop.orders", format="json-schema")
    event = await f.decode([], frame(8, b'{"id": "o2", "total": 5}'), spec)
    assert event.payload == {"id": "o2", "total": 5}
    with pytest.raises(FormatRejected, match="at total: 'five' is not of type 'integer'"):
        await f.decode([], frame(8, b'{"id": "o2", "total": "five"}'), spec)
    with pytest.raises(FormatRejected, match="JSON payload of schema id 8"):
        await f.decode([], frame(8, b"\xff\xfe"), spec)


async def test_a_registry_topic_without_a_registry_waits_rather_than_rejects() -> None:
    with pytest.raises(NoRegistry, match="HUB_SCHEMA_REGISTRY_URL is not set"):
        await EventFormats(None).decode([], avro_frame(7, ORDER), avro_topic())
    assert issubclass(NoRegistry, RegistryUnavailable)


async def test_a_waiter_whose_fetcher_was_cancelled_fetches_for_itself() -> None:
    gate, asked = asyncio.Event(), asyncio.Event()
    seen: list[str] = []
    reg = SchemaRegistry("http://registry.test", transport=replies(
        {3: ("AVRO", '"string"')}, seen, gate, asked))
    first = asyncio.create_task(reg.schema(3))
    await asked.wait()
    second = asyncio.create_task(reg.schema(3))
    await asyncio.sleep(0)  # one turn: the second now waits on the first's request
    first.cancel()
    gate.set()
    assert (await second).id == 3 and first.cancelled()
    assert seen == ["/schemas/ids/3", "/schemas/ids/3"]
    await reg.aclose()


async def test_emitting_to_a_subject_without_a_schema_registers_the_topics_model() -> None:
    calls: list[tuple[str, str, Any]] = []

    def handle(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else None
        calls.append((request.method, request.url.path, body))
        if request.method == "GET":
            return httpx.Response(404, json={"error_code": 40401})
        return httpx.Response(200, json={"id": 12})

    f = EventFormats(SchemaRegistry("http://registry.test",
                                    transport=httpx.MockTransport(handle)))
    spec = avro_topic(event="workflows.events:OrderPlaced")
    value, _ = await f.encode(spec, json.dumps({**ORDER, "schema_version": 1,
                                                "customer_name": "", "payment_method": "x"}),
                              {}, "e1")
    assert [c[:2] for c in calls] == [
        ("GET", "/subjects/shop.orders-value/versions/latest"),
        ("POST", "/subjects/shop.orders-value/versions")]
    schema_id, payload = split_frame(value)
    written = fastavro.parse_schema(json.loads(calls[1][2]["schema"]))
    assert schema_id == 12
    assert fastavro.schemaless_reader(io.BytesIO(payload), written, None)["id"] == "o1"
