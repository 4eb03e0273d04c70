"""Records in the formats upstream teams already use: registry-framed Avro, JSON Schema or
Protobuf, CloudEvents (binary or structured), by what the topic declares in topics.yaml.

Plain JSON topics never come here (``hub.runtime.consumer.decode_record`` keeps its path).
Decoding needs the registry, so it is async; what it cannot decode is refused with the stage
and the reason (``FormatRejected``: dead-letter it), and a registry that cannot answer now
raises ``RegistryUnavailable`` (retry the batch: the record is good).
"""

from __future__ import annotations

import io
import json
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import fastavro
import jsonschema

from hub import wire as h
from hub.runtime import cloudevents as ce
from hub.runtime import protobuf_format as pb
from hub.runtime.schema_of import UnsupportedSchema, registry_schema
from hub.runtime.schema_registry import (
    RegisteredSchema,
    RegistryUnavailable,
    SchemaRegistry,
    SchemaType,
    SchemaUnusable,
)
from hub.runtime.topics import REGISTRY_FORMATS, TopicSpec
from hub.runtime.wireformat import FrameError, frame, split_frame

_SCHEMA_TYPE: dict[str, SchemaType] = {"avro": "AVRO", "json-schema": "JSON",
                                        "protobuf": "PROTOBUF"}


class FormatRejected(Exception):
    """A record its topic's format cannot accept: dead-letter it at ``stage``."""

    def __init__(self, stage: str, cause: BaseException | str) -> None:
        super().__init__(str(cause))
        self.stage = stage
        self.cause = cause


class EncodeError(ValueError):
    """An emitted event that does not fit its topic's schema: the outbox fails the row (a
    ``ValueError``, so not retried) with this reason."""


class NoRegistry(RegistryUnavailable):
    """A topic needs the registry and ``HUB_SCHEMA_REGISTRY_URL`` is not set: the records
    wait (the batch is retried, then the partition parked) rather than be dead-lettered."""


@dataclass(frozen=True)
class FormattedEvent:
    """A decoded record: the payload to validate, and what identifies and routes it."""

    payload: Any
    event_id: str | None
    headers: dict[str, str]
    ce_type: str | None = None


def _text_headers(raw: Sequence[tuple[str, bytes]] | None) -> dict[str, str]:
    return {k: bytes(v).decode("utf-8", "replace") for k, v in raw or ()}


@dataclass(frozen=True)
class _Prepared:
    """A schema made ready once per id: parsed Avro, a compiled JSON Schema validator, or a
    compiled ``.proto``."""

    schema: RegisteredSchema
    avro: Any = None
    validator: Any = None
    proto: pb.ProtoSchema | None = None


class EventFormats:
    """Decode and encode by a topic's declared format; parsed schemas cached by id."""

    def __init__(self, registry: SchemaRegistry | None, *, cache_size: int = 1000) -> None:
        self.registry = registry
        self.cache_size = cache_size
        self._prepared: OrderedDict[int, _Prepared] = OrderedDict()
        self._latest: dict[str, _Prepared] = {}

    @staticmethod
    def applies(spec: TopicSpec | None) -> bool:
        """Whether ``spec``'s records come here rather than the plain JSON path."""
        return spec is not None and (spec.format != "json" or spec.cloudevents is not None)

    def _need_registry(self, spec: TopicSpec) -> SchemaRegistry:
        if self.registry is None:
            raise NoRegistry(f"topic {spec.name!r} is in format {spec.format!r} but "
                             "HUB_SCHEMA_REGISTRY_URL is not set")
        return self.registry

    # -- decoding --------------------------------------------------------------------------
    async def decode(self, raw_headers: Sequence[tuple[str, bytes]] | None,
                     value: bytes | None, spec: TopicSpec) -> FormattedEvent:
        headers = _text_headers(raw_headers)
        if spec.cloudevents is None:
            payload = await self._data(value, spec)
            event_id = headers.get(h.EVENT_ID)
            if event_id is None and isinstance(payload, dict) and isinstance(
                    payload.get("id"), str | int):
                event_id = str(payload["id"])
            return FormattedEvent(payload, event_id, headers)
        try:
            if ce.mode_of(raw_headers) == "structured":
                attrs, payload = ce.structured(value)
                for name, text in attrs.items():
                    headers.setdefault(ce.HEADER_PREFIX + name, text)
            else:
                attrs = ce.binary_attributes(raw_headers)
                payload = await self._data(value, spec)
        except ce.CloudEventError as exc:
            raise FormatRejected("cloudevent", exc) from None
        return FormattedEvent(payload, attrs["id"], headers, attrs["type"])

    async def _data(self, value: bytes | None, spec: TopicSpec) -> Any:
        if value is None:
            raise FormatRejected("deserialize", "record has no value (tombstone)")
        if spec.format not in REGISTRY_FORMATS:
            try:
                return json.loads(value.decode("utf-8"))
            except (UnicodeDecodeError, ValueError) as exc:
                raise FormatRejected("deserialize", exc) from None
        try:
            schema_id, payload = split_frame(value)
        except FrameError as exc:
            raise FormatRejected("deserialize", exc) from None
        prepared = await self._schema(schema_id, spec)
        if prepared.avro is not None:
            return _read_avro(payload, prepared)
        if prepared.proto is not None:
            try:
                return pb.decode(prepared.proto, payload)
            except pb.ProtobufError as exc:
                raise FormatRejected("deserialize", f"Protobuf payload of schema id "
                                                    f"{schema_id}: {exc}") from None
        try:
            data = json.loads(payload.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise FormatRejected("deserialize", f"JSON payload of schema id {schema_id}: {exc}"
                                 ) from None
        error = jsonschema.exceptions.best_match(prepared.validator.iter_errors(data))
        if error is not None:
            where = "/".join(map(str, error.absolute_path)) or "the root"
            raise FormatRejected("validate", f"does not match schema id {schema_id} at "
                                             f"{where}: {error.message[:500]}")
        return data

    async def _schema(self, schema_id: int, spec: TopicSpec) -> _Prepared:
        prepared = self._prepared.get(schema_id)
        if prepared is None:
            try:
                found = await self._need_registry(spec).schema(schema_id)
            except SchemaUnusable as exc:
                raise FormatRejected("schema", exc) from None
            prepared = self._prepare(found)
            self._prepared[schema_id] = prepared
            while len(self._prepared) > self.cache_size:
                self._prepared.popitem(last=False)
        else:
            self._prepared.move_to_end(schema_id)
        wanted = _SCHEMA_TYPE[spec.format]
        if prepared.schema.schema_type != wanted:
            raise FormatRejected("schema", (
                f"schema id {schema_id} is a {prepared.schema.schema_type} schema; topic "
                f"{spec.name!r} declares format {spec.format!r}"))
        return prepared

    @staticmethod
    def _prepare(found: RegisteredSchema) -> _Prepared:
        """Parse once; a schema the registry holds but no parser takes refuses its records."""
        if found.schema_type == "PROTOBUF":
            try:
                return _Prepared(found, proto=pb.compile_proto(found.text))
            except pb.ProtobufError as exc:
                raise FormatRejected("schema", f"schema id {found.id} (PROTOBUF): {exc}"
                                     ) from None
        try:
            parsed = json.loads(found.text)
            if found.schema_type == "AVRO":
                return _Prepared(found, avro=fastavro.parse_schema(parsed))
            if found.schema_type == "JSON":
                cls = jsonschema.validators.validator_for(parsed)
                cls.check_schema(parsed)
                return _Prepared(found, validator=cls(parsed))
        except FormatRejected:
            raise
        except Exception as exc:  # fastavro's SchemaParseException, RecursionError, ...
            raise FormatRejected("schema", f"schema id {found.id} ({found.schema_type}) "
                                           f"cannot be parsed: {str(exc)[:300]}") from None

    # -- encoding (the outbox) -------------------------------------------------------------
    async def encode(self, spec: TopicSpec, payload_json: str, headers: dict[str, str],
                     event_id: str) -> tuple[bytes, list[tuple[str, bytes]]]:
        """The value and headers to publish ``payload_json`` with on ``spec``'s topic."""
        value = payload_json.encode()
        content_type = "application/json"
        if spec.format in REGISTRY_FORMATS:
            value = await self._framed(spec, payload_json)
            content_type = {"avro": "application/avro", "protobuf": "application/protobuf"
                            }.get(spec.format, "application/json")
        plain = {k: v for k, v in headers.items() if not k.lower().startswith(ce.HEADER_PREFIX)}
        out = [(k, str(v).encode()) for k, v in plain.items()]
        if spec.cloudevents is None:
            return value, out
        attrs = ce.attributes_for(event_id, source=spec.cloudevents.source,
                                  type_=spec.cloudevents.type or spec.name, given=headers)
        if spec.cloudevents.mode == "structured":
            out = [(k, v) for k, v in out if k.lower() != ce.CONTENT_TYPE]
            return (ce.structured_value(attrs, payload_json),
                    [*out, (ce.CONTENT_TYPE, ce.STRUCTURED_JSON.encode())])
        if not any(k.lower() == ce.CONTENT_TYPE for k, _ in out):
            out.append((ce.CONTENT_TYPE, content_type.encode()))
        return value, [*out, *ce.binary_headers(attrs)]

    async def _framed(self, spec: TopicSpec, payload_json: str) -> bytes:
        subject = spec.registry_subject
        assert subject is not None
        prepared = self._latest.get(subject)
        if prepared is None:
            registry = self._need_registry(spec)
            found = await registry.latest(subject)
            if found is None:
                found = await _register_model(registry, spec, subject)
            try:
                prepared = self._prepare(found)
            except FormatRejected as exc:
                raise EncodeError(str(exc)) from None
            self._latest[subject] = prepared
        data = json.loads(payload_json)
        if prepared.avro is not None:
            buf = io.BytesIO()
            try:
                fastavro.schemaless_writer(buf, prepared.avro, data, strict=True)
            except Exception as exc:  # fastavro's ValueError/TypeError/ValidationError
                raise EncodeError(f"event does not fit the Avro schema of {subject!r} "
                                  f"(id {prepared.schema.id}): {str(exc)[:500]}") from None
            return frame(prepared.schema.id, buf.getvalue())
        if prepared.proto is not None:
            try:
                return frame(prepared.schema.id, pb.encode(prepared.proto, data))
            except pb.ProtobufError as exc:
                raise EncodeError(f"{subject!r} (id {prepared.schema.id}): {exc}") from None
        if prepared.validator is None:
            raise EncodeError(f"subject {subject!r} holds a {prepared.schema.schema_type} "
                              f"schema; topic {spec.name!r} declares {spec.format!r}")
        error = jsonschema.exceptions.best_match(prepared.validator.iter_errors(data))
        if error is not None:
            raise EncodeError(f"event does not match the JSON Schema of {subject!r} "
                              f"(id {prepared.schema.id}): {error.message[:500]}")
        return frame(prepared.schema.id, payload_json.encode())


async def _register_model(registry: SchemaRegistry, spec: TopicSpec,
                          subject: str) -> RegisteredSchema:
    """A subject with no schema yet gets its topic's model (the first version; the registry's
    compatibility rule governs every later one); without a model it cannot be framed."""
    model = spec.event_model()
    if model is None:
        raise SchemaUnusable(f"subject {subject!r} has no schema in the registry and topic "
                             f"{spec.name!r} declares no event model to register")
    try:
        text, kind = registry_schema(model, spec.format)
    except UnsupportedSchema as exc:
        raise EncodeError(f"{spec.event} has no {spec.format} form: {exc}") from None
    schema_id = await registry.register(subject, text, kind)
    return RegisteredSchema(schema_id, kind, text)


def route(spec: TopicSpec | None, ce_type: str | None, names: Sequence[str]) -> set[str] | None:
    """The subscribers a CloudEvent of ``ce_type`` goes to, or None: every one. A type the
    topic does not route is refused, naming the routed types, rather than dropped."""
    if spec is None or spec.cloudevents is None or not spec.cloudevents.routes:
        return None
    routes = spec.cloudevents.routes
    if ce_type not in routes:
        raise FormatRejected("cloudevent", (
            f"CloudEvent type {str(ce_type)[:200]!r} has no route on topic {spec.name!r} "
            f"(routed: {', '.join(sorted(routes))})"))
    wanted = set(routes[ce_type])
    if not wanted & set(names):
        raise FormatRejected("cloudevent", (
            f"CloudEvent type {ce_type!r} routes to {sorted(wanted)} on topic {spec.name!r}, "
            f"but no such subscriber runs here (subscribed: {sorted(names)})"))
    return wanted


def _read_avro(payload: bytes, prepared: _Prepared) -> Any:
    buf = io.BytesIO(payload)
    try:
        record = fastavro.schemaless_reader(buf, prepared.avro, None)
    except Exception as exc:  # EOFError, UnicodeDecodeError, IndexError, ...
        raise FormatRejected("deserialize", (
            f"Avro payload does not decode with schema id {prepared.schema.id}: "
            f"{type(exc).__name__}: {str(exc)[:300]}")) from None
    left = len(payload) - buf.tell()
    if left:
        raise FormatRejected("deserialize", (
            f"Avro payload has {left} byte(s) left after the record of schema id "
            f"{prepared.schema.id} (written with another schema?)"))
    return record

