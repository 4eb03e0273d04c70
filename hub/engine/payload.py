"""Turning inputs and outputs into stored JSON, with the size limit checked up front.

Sizes are checked where values are produced, so an oversized output fails its step with a
message naming the step and the size, instead of surprising production later.
"""

from __future__ import annotations

import re
from typing import Any

import pydantic_core
from pydantic_core import PydanticSerializationError, to_jsonable_python

from hub.errors import HubError, PayloadTooLarge
from hub.types import JSON

_NUL = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")
"""An escaped NUL in JSON text (an odd run of backslashes before ``u0000``)."""


_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
"""What Postgres cannot hold in text or jsonb: NUL, and surrogates (in a ``str`` every
surrogate is a lone one; a valid pair is one astral code point)."""


def storable_text(text: str) -> bool:
    """What callers send is refused (API bodies, ids) rather than cleaned: a changed id
    would name something else."""
    return _UNSTORABLE.search(text) is None


def clean_text(text: str) -> str:
    """Outside text (an error message, a traceback, a header) made storable: each NUL and
    lone surrogate becomes U+FFFD. Text the hub only records is cleaned, never refused,
    so a system that answers with garbage cannot fail the checkpoint that records it."""
    return text if storable_text(text) else _UNSTORABLE.sub("\ufffd", text)


def clean_json(value: Any) -> Any:
    """``clean_text`` over every string of a JSON value, keys included."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, dict):
        return {clean_text(str(k)): clean_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean_json(v) for v in value]
    return value


def tail_lines(text: str, limit: int) -> str:
    """The end of ``text`` within ``limit`` characters, from the start of a line: a cut
    traceback reads from a whole frame line, not from the middle of one. A last line
    longer than ``limit`` is kept as its own tail."""
    if len(text) <= limit:
        return text
    start = len(text) - limit
    if text[start - 1] == "\n":
        return text[start:]
    cut = text.find("\n", start)
    return text[cut + 1:] if cut != -1 and cut + 1 < len(text) else text[start:]


class Unserializable(HubError, TypeError):
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
    """Encode JSON text, refusing payloads over ``limit`` bytes and what Postgres's jsonb
    cannot store (NUL characters, lone surrogates): better refused here, naming the value,
    than failing a whole batch of starts or a checkpoint later."""
    try:
        raw = pydantic_core.to_json(value)  # several times faster than json.dumps
    except pydantic_core.PydanticSerializationError as exc:
        raise Unserializable(f"{what} cannot be stored as JSON: {exc}") from None
    if b"\\u0000" in raw and _NUL.search(raw):
        raise Unserializable(f"{what} contains a NUL character (\\u0000), which Postgres "
                             "cannot store in JSON")
    size = len(raw)
    if size > limit:
        raise PayloadTooLarge(
            f"{what} is {size} bytes, over the limit of {limit} bytes "
            "(HUB_MAX_PAYLOAD_BYTES); store large data elsewhere and pass a reference"
        )
    return raw.decode()
