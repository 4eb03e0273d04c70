"""Turning inputs and outputs into stored JSON, with the size limit checked up front.

Sizes are checked where values are produced, so an oversized output fails its step with a
message naming the step and the size, instead of surprising production later.
"""

from __future__ import annotations

from typing import Any

import pydantic_core
from pydantic_core import PydanticSerializationError, to_jsonable_python

from hub.errors import PayloadTooLarge
from hub.types import JSON


class Unserializable(TypeError):
    """A value that cannot be stored as JSON."""


def to_json(value: Any, what: str) -> JSON:
    """A JSON-compatible copy of ``value`` (pydantic models, dataclasses, dates included)."""
    try:
        return to_jsonable_python(value)
    except (PydanticSerializationError, TypeError, ValueError) as exc:
        raise Unserializable(
            f"{what} cannot be stored as JSON: {type(value).__name__} ({exc}); return "
            "pydantic models or JSON values"
        ) from None


def encode(value: JSON, what: str, limit: int) -> str:
    """Encode JSON text, refusing payloads over ``limit`` bytes."""
    raw = pydantic_core.to_json(value)  # several times faster than json.dumps
    size = len(raw)
    if size > limit:
        raise PayloadTooLarge(
            f"{what} is {size} bytes, over the limit of {limit} bytes "
            "(HUB_MAX_PAYLOAD_BYTES); store large data elsewhere and pass a reference"
        )
    return raw.decode()
