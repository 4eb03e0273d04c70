"""Protobuf records in the schema registry's wire format.

After the schema id, a Protobuf frame names which message of the ``.proto`` file it holds: a
zig-zag varint count, then that many zig-zag varint indexes (top-level message, nested
message, ...); the single byte 0 stands for ``[0]``, the first message. The registry hands
out ``.proto`` source, so it is compiled once per schema id (protoc from grpcio-tools, in
process) into descriptors; imports other than Google's well-known types are refused.
"""

from __future__ import annotations

import importlib.resources
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory
from google.protobuf.descriptor import Descriptor
from google.protobuf.message import DecodeError, Message

MAX_INDEXES = 64
_IMPORT = re.compile(r"""\bimport\s+(?:public\s+|weak\s+)?["']([^"']*)["']""")
"""An import, for a clear refusal; protoc itself reads only this file and Google's types."""


class ProtobufError(ValueError):
    """A ``.proto`` that does not compile, or a payload that does not fit it."""


@dataclass(frozen=True)
class ProtoSchema:
    """A compiled ``.proto`` file: its top-level messages, in file order."""

    messages: tuple[Descriptor, ...]

    def message(self, indexes: list[int]) -> Descriptor:
        if not self.messages:
            raise ProtobufError("the .proto file declares no message")
        try:
            found = self.messages[indexes[0]]
            for i in indexes[1:]:
                found = found.nested_types[i]
        except IndexError:
            raise ProtobufError(f"message index path {indexes} names no message of the "
                                ".proto file") from None
        return found


def compile_proto(text: str) -> ProtoSchema:
    """Compile ``.proto`` source; ``ProtobufError`` carries protoc's complaint."""
    from grpc_tools import protoc

    for name in _IMPORT.findall(text):
        if not name.startswith("google/protobuf/") or ".." in name:
            raise ProtobufError(f"the .proto imports {name!r}: schema references are not "
                                "supported (only Google's well-known types)")
    include = str(importlib.resources.files("grpc_tools") / "_proto")
    with tempfile.TemporaryDirectory(prefix="hub-proto-") as tmp:
        source = Path(tmp) / "schema.proto"
        source.write_text(text)
        out = Path(tmp) / "schema.pb"
        code = protoc.main(["protoc", f"-I{tmp}", f"-I{include}", "--include_imports",
                            f"--descriptor_set_out={out}", str(source)])
        if code != 0 or not out.exists():
            raise ProtobufError("the .proto does not compile (protoc exit "
                                f"{code}; see the worker's stderr)")
        files = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    pool = descriptor_pool.DescriptorPool()
    main = None
    for proto in files.file:
        added = pool.Add(proto)
        if proto.name == "schema.proto":
            main = added
    assert main is not None
    return ProtoSchema(tuple(main.message_types_by_name[m.name]
                             for m in files.file[-1].message_type))


def _varint(data: bytes, at: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        if at >= len(data):
            raise ProtobufError("truncated message indexes after the schema id")
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return (value >> 1) ^ -(value & 1), at  # zig-zag
        shift += 7
        if shift > 63:
            raise ProtobufError("a message index varint longer than 10 bytes")


def split_indexes(payload: bytes) -> tuple[list[int], bytes]:
    """The message index path and the Protobuf bytes after it."""
    count, at = _varint(payload, 0)
    if count == 0:
        return [0], payload[at:]
    if not 0 < count <= MAX_INDEXES:
        raise ProtobufError(f"{count} message indexes (1..{MAX_INDEXES} expected)")
    indexes = []
    for _ in range(count):
        index, at = _varint(payload, at)
        if index < 0:
            raise ProtobufError(f"negative message index {index}")
        indexes.append(index)
    return indexes, payload[at:]


def decode(schema: ProtoSchema, payload: bytes) -> dict[str, Any]:
    """The framed message as a dict: proto field names, fields at their default too (a
    model's required ``total: int`` may be 0), 64-bit integers as strings (the proto3 JSON
    mapping; the model's validation turns them into ints)."""
    indexes, body = split_indexes(payload)
    cls = message_factory.GetMessageClass(schema.message(indexes))
    msg: Message = cls()
    try:
        msg.ParseFromString(body)
    except DecodeError as exc:
        raise ProtobufError(f"payload does not decode as {cls.DESCRIPTOR.full_name}: {exc}"
                            ) from None
    found: dict[str, Any] = json_format.MessageToDict(
        msg, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
    return found


def encode(schema: ProtoSchema, data: Any) -> bytes:
    """``data`` as the first message of the file, with its index path (the byte 0)."""
    cls = message_factory.GetMessageClass(schema.message([0]))
    try:
        msg = json_format.ParseDict(data, cls())
    except json_format.ParseError as exc:
        raise ProtobufError(f"event does not fit {cls.DESCRIPTOR.full_name}: {exc}") from None
    body: bytes = msg.SerializeToString()
    return b"\x00" + body
