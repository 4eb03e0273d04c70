"""Protobuf in the registry's wire format: frames written by the protobuf runtime itself (the
message class compiled from the ``.proto``, its ``SerializeToString``, the index path and the
5-byte framing); the registry's answers are recorded replies (``httpx.MockTransport``)."""

from __future__ import annotations

import json

import pytest
from google.protobuf import message_factory

from hub.runtime import protobuf_format as pb
from hub.runtime.formats import EventFormats, FormatRejected
from hub.runtime.schema_registry import SchemaRegistry
from hub.runtime.topics import TopicSpec
from hub.runtime.wireformat import frame, split_frame
from tests.test_wireformat import ORDER, ORDER_AVRO, replies
from workflows.events import OrderPlaced

PROTO = """
syntax = "proto3";
package shop;

message OrderPlaced {
  string id = 1;
  string customer_email = 2;
  string currency = 3;
  repeated OrderLine lines = 4;
  int64 total = 5;
  message Note { string text = 1; }
}

message OrderLine {
  string sku = 1;
  int32 quantity = 2;
  int64 unit_price = 3;
}
"""


def written(indexes: bytes, name: str, data: dict[str, object]) -> bytes:
    """A frame as a Protobuf producer writes it (``indexes``: the encoded index path)."""
    schema = pb.compile_proto(PROTO)
    descriptor = next(d for d in schema.messages if d.name == name)
    cls = message_factory.GetMessageClass(descriptor)
    from google.protobuf import json_format

    return frame(5, indexes + json_format.ParseDict(data, cls()).SerializeToString())


def protobuf_formats() -> EventFormats:
    return EventFormats(SchemaRegistry("http://registry.test", transport=replies(
        {5: ("PROTOBUF", PROTO), 6: ("PROTOBUF", 'syntax = "proto3"; message {'),
         7: ("AVRO", json.dumps(ORDER_AVRO)),
         8: ("PROTOBUF", 'syntax = "proto3"; import "other.proto"; message A {}')})))


SPEC = TopicSpec(name="shop.orders", format="protobuf")


async def test_the_first_message_decodes_into_the_model_with_zero_values_kept() -> None:
    value = written(b"\x00", "OrderPlaced", {**ORDER, "total": 0, "lines": []})
    event = await protobuf_formats().decode([], value, SPEC)
    assert event.payload["total"] == "0" and event.event_id == "o1"
    placed = OrderPlaced.model_validate({**event.payload, "lines": ORDER["lines"]})
    assert placed.total == 0


async def test_an_index_path_names_a_later_or_a_nested_message() -> None:
    f = protobuf_formats()
    line = await f.decode([], written(b"\x02\x02", "OrderLine",  # [1]: the second message
                                      {"sku": "S", "quantity": 2, "unit_price": 5}), SPEC)
    assert line.payload == {"sku": "S", "quantity": 2, "unit_price": "5"}
    schema = pb.compile_proto(PROTO)
    assert schema.message([0, 0]).full_name == "shop.OrderPlaced.Note"


async def test_bad_protobuf_frames_are_refused_with_stage_and_reason() -> None:
    f = protobuf_formats()
    cases = [
        (frame(5, b""), "deserialize", "truncated message indexes"),
        (frame(5, b"\x02\x0a"), "deserialize", "message index path [5] names no message"),
        (frame(5, b"\x03"), "deserialize", "-2 message indexes (1..64 expected)"),
        (frame(5, b"\x02\x01"), "deserialize", "negative message index -1"),
        (frame(5, b"\x02" + b"\xff" * 11), "deserialize", "longer than 10 bytes"),
        (frame(5, b"\x00\x0a\xff"), "deserialize", "does not decode as shop.OrderPlaced"),
        (frame(6, b"\x00"), "schema", "schema id 6 (PROTOBUF): the .proto does not compile"),
        (frame(8, b"\x00"), "schema", "imports 'other.proto': schema references"),
        (frame(7, b"\x00"), "schema", "schema id 7 is a AVRO schema"),
    ]
    for value, stage, reason in cases:
        with pytest.raises(FormatRejected) as caught:
            await f.decode([], value, SPEC)
        assert (caught.value.stage, reason in str(caught.value)) == (stage, True), (
            value, str(caught.value))


def test_an_event_encodes_as_the_first_message_with_its_index_byte() -> None:
    schema = pb.compile_proto(PROTO)
    body = pb.encode(schema, ORDER)
    assert body[:1] == b"\x00"
    assert pb.decode(schema, body)["id"] == "o1"
    with pytest.raises(pb.ProtobufError, match="does not fit shop.OrderPlaced"):
        pb.encode(schema, {"nope": 1})
    schema_id, payload = split_frame(frame(5, body))
    assert (schema_id, payload) == (5, body)
