"""The schema registry's wire format: magic byte 0, a 4-byte big-endian schema id, the payload.

Shops that publish Avro or JSON Schema against a Confluent-compatible registry frame every
value this way, so a consumer can fetch the writer's schema by id. Splitting a frame is pure
and checked here once, so a short, foreign or hostile value is refused with its reason before
anything asks the registry about it.
"""

from __future__ import annotations

import struct

MAGIC = 0
HEADER_BYTES = 5
MAX_SCHEMA_ID = 2**31 - 1
"""Registries hand out ids from 1 up, as a signed 32-bit integer."""


class FrameError(ValueError):
    """A value that is not a registry frame (too short, another magic byte, an id out of range)."""


def split_frame(value: bytes) -> tuple[int, bytes]:
    """The schema id and the payload of a framed value; ``FrameError`` says what is wrong."""
    if len(value) < HEADER_BYTES:
        raise FrameError(
            f"truncated frame: {len(value)} byte(s), the wire format needs at least "
            f"{HEADER_BYTES} (magic byte 0 and a 4-byte schema id)")
    if value[0] != MAGIC:
        raise FrameError(
            f"wrong magic byte 0x{value[0]:02x}: the wire format starts with 0x00 "
            "(is the producer writing plain JSON or another framing?)")
    (schema_id,) = struct.unpack(">I", value[1:HEADER_BYTES])
    if not 1 <= schema_id <= MAX_SCHEMA_ID:
        raise FrameError(f"schema id {schema_id} is out of range (1..{MAX_SCHEMA_ID})")
    return schema_id, value[HEADER_BYTES:]


def frame(schema_id: int, payload: bytes) -> bytes:
    """``payload`` framed for ``schema_id``."""
    if not 1 <= schema_id <= MAX_SCHEMA_ID:
        raise FrameError(f"schema id {schema_id} is out of range (1..{MAX_SCHEMA_ID})")
    return struct.pack(">bI", MAGIC, schema_id) + payload
