"""CloudEvents 1.0 over Kafka (the spec's Kafka protocol binding), both modes.

Binary mode: the attributes are ``ce_*`` headers and the value is the data. Structured
mode: ``content-type: application/cloudevents+json`` and the value is the whole event as
JSON, its data under ``data``. An event must carry ``specversion`` 1.0, ``id``, ``source``
and ``type``; ``id`` becomes the hub's event id, so a redelivered CloudEvent starts nothing
new, and ``type`` may route it (``cloudevents.routes`` in topics.yaml).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal

SPECVERSION = "1.0"
REQUIRED = ("specversion", "id", "source", "type")
HEADER_PREFIX = "ce_"
CONTENT_TYPE = "content-type"
STRUCTURED_JSON = "application/cloudevents+json"
_NAME = re.compile(r"^[a-z0-9]{1,20}$")
"""Attribute names the spec allows (lower-case letters and digits; 20 at most is advised)."""
MAX_ATTRIBUTE_CHARS = 4096

Mode = Literal["binary", "structured"]


class CloudEventError(ValueError):
    """A record that is not a valid CloudEvent; the message names what is missing or wrong."""


def mode_of(raw_headers: Sequence[tuple[str, bytes]] | None) -> Mode:
    """Structured when the content type says so, binary when ``ce_specversion`` is there."""
    names = set()
    for name, value in raw_headers or ():
        lowered = name.lower()
        names.add(lowered)
        if lowered == CONTENT_TYPE:
            text = bytes(value).decode("utf-8", "replace").strip().lower()
            if text.startswith("application/cloudevents-batch"):
                raise CloudEventError("batched CloudEvents (application/cloudevents-batch+json) "
                                      "are not accepted: send one event per record")
            if text.startswith("application/cloudevents"):
                if not text.startswith(STRUCTURED_JSON):
                    raise CloudEventError(f"structured CloudEvent in {text[:80]!r}: only "
                                          f"{STRUCTURED_JSON} is accepted")
                return "structured"
    if HEADER_PREFIX + "specversion" in names:
        return "binary"
    raise CloudEventError(
        "not a CloudEvent: no ce_specversion header (binary mode) and content-type is not "
        f"{STRUCTURED_JSON} (structured mode)")


def binary_attributes(raw_headers: Sequence[tuple[str, bytes]] | None) -> dict[str, str]:
    """The ``ce_*`` headers as attributes (checked); a header that is not UTF-8 is refused,
    naming it, rather than guessed at."""
    attrs: dict[str, str] = {}
    for name, value in raw_headers or ():
        if not name.lower().startswith(HEADER_PREFIX):
            continue
        attr = name[len(HEADER_PREFIX):].lower()
        try:
            attrs[attr] = bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            raise CloudEventError(f"header {name!r} is not UTF-8 text") from None
    check(attrs)
    return attrs


def structured(value: bytes | None) -> tuple[dict[str, str], Any]:
    """The attributes and the data of a structured-mode value."""
    if value is None:
        raise CloudEventError("structured CloudEvent with no value (tombstone)")
    try:
        event = json.loads(value.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise CloudEventError(f"structured CloudEvent is not JSON: {exc}") from None
    if not isinstance(event, dict):
        raise CloudEventError("structured CloudEvent is not a JSON object")
    if "data_base64" in event:
        raise CloudEventError("data_base64 is not accepted: a JSON event model needs JSON "
                              "data under 'data'")
    data = event.pop("data", None)
    attrs: dict[str, str] = {}
    for name, raw in event.items():
        if isinstance(raw, bool) or not isinstance(raw, str | int | float):
            raise CloudEventError(f"attribute {name!r} is not a string or a number")
        attrs[str(name)] = str(raw)
    check(attrs)
    return attrs, data


def check(attrs: Mapping[str, str]) -> None:
    """Required attributes present and non-empty, ``specversion`` 1.0, names and sizes sane."""
    missing = [a for a in REQUIRED if not attrs.get(a)]
    if missing:
        raise CloudEventError(f"CloudEvent lacks required attribute(s) {', '.join(missing)} "
                              f"(present: {', '.join(sorted(attrs)) or 'none'})")
    if attrs["specversion"] != SPECVERSION:
        raise CloudEventError(f"CloudEvent specversion {attrs['specversion'][:40]!r} is not "
                              f"supported (only {SPECVERSION!r})")
    for name, value in attrs.items():
        if not _NAME.match(name):
            raise CloudEventError(f"attribute name {name[:40]!r} is not lower-case letters "
                                  "and digits (at most 20)")
        if len(value) > MAX_ATTRIBUTE_CHARS or "\x00" in value:
            raise CloudEventError(f"attribute {name!r} is longer than {MAX_ATTRIBUTE_CHARS} "
                                  "characters or holds a NUL")


def attributes_for(event_id: str, *, source: str, type_: str,
                   given: Mapping[str, str]) -> dict[str, str]:
    """The attributes of an emitted event: ours, with the step's ``ce_*`` headers winning."""
    attrs = {"specversion": SPECVERSION, "id": event_id, "source": source, "type": type_}
    for name, value in given.items():
        if name.lower().startswith(HEADER_PREFIX):
            attrs[name[len(HEADER_PREFIX):].lower()] = value
    attrs["specversion"] = SPECVERSION
    return attrs


def binary_headers(attrs: Mapping[str, str]) -> list[tuple[str, bytes]]:
    return [(HEADER_PREFIX + name, value.encode()) for name, value in attrs.items()]


def structured_value(attrs: Mapping[str, str], data_json: str) -> bytes:
    """The whole event as JSON (``data_json`` is already JSON text, spliced in as is)."""
    head = json.dumps(dict(attrs), ensure_ascii=False)
    return (head[:-1] + ', "data": ' + data_json + "}").encode()
