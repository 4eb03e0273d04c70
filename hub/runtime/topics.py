"""``topics.yaml``: every topic the hub consumes or produces, validated with line numbers.

The file is the contract with upstream teams, so a mistake in it must be found before a
consumer starts, with the file, the line and the field named.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from hub.errors import HubError

_DURATION = re.compile(r"^(\d+)(ms|s|m|h|d)$")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_TOPIC_NAME = re.compile(r"^[A-Za-z0-9._-]{1,249}$")


class TopicsFileError(HubError):
    """topics.yaml is malformed; the message names file, line and field."""


def duration_ms(value: str | int) -> int:
    """``7d``, ``12h``, ``30m``, ``45s``, ``500ms`` or a number of milliseconds; -1 = forever."""
    if isinstance(value, int):
        return value
    m = _DURATION.match(value.strip())
    if not m:
        raise ValueError(f"{value!r} is not a duration such as 7d, 12h, 30m, 45s or 500ms")
    return int(m.group(1)) * _UNIT_MS[m.group(2)]


EventFormat = Literal["json", "avro", "json-schema", "protobuf"]
"""How a topic's values are written: plain JSON (the default), or framed in the schema
registry's wire format (magic byte 0, a 4-byte schema id, then Avro, JSON or Protobuf)."""

REGISTRY_FORMATS: frozenset[str] = frozenset({"avro", "json-schema", "protobuf"})


class CloudEventsSpec(BaseModel):
    """A topic whose records are CloudEvents (Kafka protocol binding). Both modes are read;
    ``mode`` is the one the hub writes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Literal["binary", "structured"] = "binary"
    source: str = Field(default="/hub", min_length=1, description="ce_source of emitted events")
    type: str | None = Field(default=None, min_length=1,
                             description="ce_type of emitted events (a step's ce_type header "
                                         "wins); default: the topic name")
    routes: dict[str, list[str]] = Field(
        default_factory=dict,
        description="ce_type to the subscribers it goes to; empty: every subscriber")


class TopicSpec(BaseModel):
    """One topic's declaration."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = ""
    partitions: int = Field(default=8, ge=1, le=10_000)
    replication_factor: int = Field(default=1, ge=1, le=32)
    retention: str | int = "7d"
    cleanup_policy: Literal["delete", "compact", "compact,delete"] = "delete"
    event: str | None = Field(default=None, description="module:Model of the payload")
    schema_version: int = Field(default=1, ge=1)
    accepted_versions: list[int] = Field(default_factory=list)
    dead_letter: str | None = None
    consumers: list[str] = Field(default_factory=list)
    producers: list[str] = Field(default_factory=list)
    description: str = ""
    format: EventFormat = "json"
    subject: str | None = Field(default=None, min_length=1, max_length=500,
                                description="registry subject; default <topic>-value")
    cloudevents: CloudEventsSpec | None = None

    @model_validator(mode="after")
    def _format_fits(self) -> TopicSpec:
        if self.subject is not None and self.format not in REGISTRY_FORMATS:
            raise ValueError(f"subject is only for a registry format (avro, json-schema, "
                             "protobuf); "
                             f"this topic's format is {self.format!r}")
        if (self.cloudevents is not None and self.cloudevents.mode == "structured"
                and self.format in REGISTRY_FORMATS):
            raise ValueError("a structured CloudEvent carries JSON data: write mode: binary "
                             f"for a topic in format {self.format!r}")
        return self

    @property
    def registry_subject(self) -> str | None:
        """The subject whose schemas frame this topic's values (the topic-name strategy by
        default), or None for a plain JSON topic."""
        if self.format not in REGISTRY_FORMATS:
            return None
        return self.subject or f"{self.name}-value"

    @field_validator("retention")
    @classmethod
    def _retention(cls, v: str | int) -> str | int:
        duration_ms(v)
        return v

    @field_validator("event")
    @classmethod
    def _event_path(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^[A-Za-z_][\w.]*[:.][A-Za-z_]\w*$", v):
            raise ValueError(f"{v!r} is not a dotted path such as 'package.module:Model'")
        return v

    @property
    def retention_ms(self) -> int:
        return duration_ms(self.retention)

    @property
    def versions(self) -> set[int]:
        return {self.schema_version, *self.accepted_versions}

    def configs(self) -> dict[str, str]:
        """The broker-side configuration this declaration asks for."""
        return {"retention.ms": str(self.retention_ms), "cleanup.policy": self.cleanup_policy}

    def event_model(self) -> type[BaseModel] | None:
        if self.event is None:
            return None
        try:
            return import_model(self.event)
        except ValueError as exc:
            raise TopicsFileError(f"topic {self.name!r}: {exc}") from exc


def import_model(dotted: str) -> type[BaseModel]:
    """The pydantic model at ``package.module:Model``; ``ValueError`` says why not, in one
    line (a module that fails while importing counts too: the worker must not start on it)."""
    module, _, attr = dotted.replace(":", ".").rpartition(".")
    try:
        model = getattr(importlib.import_module(module), attr)
    except Exception as exc:  # ImportError, AttributeError, or whatever the module raised
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise ValueError(f"event model {dotted!r} cannot be imported: {reason}") from exc
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        raise ValueError(f"event {dotted!r} is not a pydantic model")
    return model


class _File(BaseModel):
    model_config = ConfigDict(extra="forbid")

    defaults: dict[str, Any] = Field(default_factory=dict)
    topics: dict[str, dict[str, Any]]


@dataclass(frozen=True)
class Topics:
    """The validated file."""

    path: Path
    topics: dict[str, TopicSpec]
    event_at: dict[str, tuple[int, str]] = field(default_factory=dict, compare=False)
    """Topic name to the line and field its ``event`` was written at (its own or defaults')."""

    def __getitem__(self, name: str) -> TopicSpec:
        try:
            return self.topics[name]
        except KeyError:
            raise TopicsFileError(
                f"{self.path}: topic {name!r} is not declared "
                f"(declared: {', '.join(sorted(self.topics))})"
            ) from None

    def __contains__(self, name: str) -> bool:
        return name in self.topics

    def with_prefix(self, prefix: str) -> Topics:
        """The same topics under ``prefix`` (``HUB_KAFKA_TOPIC_PREFIX``), dead letters too:
        several environments, or tests, can share one cluster without sharing topics."""
        if not prefix:
            return self
        return Topics(self.path, {
            prefix + name: spec.model_copy(update={
                "name": prefix + name,
                "dead_letter": prefix + spec.dead_letter if spec.dead_letter else None})
            for name, spec in self.topics.items()},
            {prefix + name: at for name, at in self.event_at.items()})

    def import_models(self) -> dict[str, type[BaseModel]]:
        """Import every topic's event model, so a typo stops a start (not the first record
        of that topic, hours later) naming the file, the line and the field."""
        models: dict[str, type[BaseModel]] = {}
        for spec in self.topics.values():
            if spec.event is None:
                continue
            try:
                models[spec.name] = import_model(spec.event)
            except ValueError as exc:
                line, where = self.event_at.get(spec.name, (1, f"topics.{spec.name}.event"))
                raise TopicsFileError(f"{self.path}:{line}: {where}: {exc}") from None
        return models

    def __iter__(self) -> Any:
        return iter(self.topics.values())


def _line_of(node: yaml.Node | None, path: tuple[Any, ...]) -> int | None:
    """1-based line of the YAML node at ``path`` (as deep as it exists)."""
    line = None if node is None else node.start_mark.line + 1
    for key in path:
        if isinstance(node, yaml.MappingNode):
            nxt = None
            for k, v in node.value:
                if k.value == str(key):
                    nxt = v
                    line = k.start_mark.line + 1
                    break
            node = nxt
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(
                node.value):
            node = node.value[key]
            line = node.start_mark.line + 1
        else:
            break
    return line


def load_topics(path: str | Path, prefix: str = "") -> Topics:
    """Read and validate ``topics.yaml``; every error names file, line and field.
    ``prefix`` is put before every name (see ``Topics.with_prefix``)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise TopicsFileError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        root = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f":{mark.line + 1}" if mark is not None else ""
        raise TopicsFileError(f"{path}{at}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise TopicsFileError(f"{path}:1: expected a mapping with a 'topics' key")
    try:
        parsed = _File.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(err["loc"])
        raise TopicsFileError(
            f"{path}:{_line_of(root, loc) or 1}: {'.'.join(map(str, loc))}: {err['msg']}"
        ) from None
    try:
        TopicSpec.model_validate({**parsed.defaults, "name": "defaults"})
    except ValidationError as exc:
        # a default is wrong wherever it applies: report it where it is written, once
        err = exc.errors()[0]
        loc = ("defaults", *err["loc"])
        raise TopicsFileError(
            f"{path}:{_line_of(root, loc)}: {'.'.join(map(str, loc))}: {err['msg']}"
        ) from None
    topics: dict[str, TopicSpec] = {}
    event_at: dict[str, tuple[int, str]] = {}
    for name, body in parsed.topics.items():
        where = ("topics", name)
        if not _TOPIC_NAME.match(name):
            raise TopicsFileError(
                f"{path}:{_line_of(root, where)}: topics.{name}: invalid topic name (letters, "
                "digits, '.', '_', '-'; at most 249)"
            )
        try:
            topics[name] = TopicSpec.model_validate({**parsed.defaults, **(body or {}),
                                                     "name": name})
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = _owner(where, body or {}, parsed.defaults, tuple(err["loc"]))
            raise TopicsFileError(
                f"{path}:{_line_of(root, loc)}: {'.'.join(map(str, loc))}: {err['msg']}"
            ) from None
        if topics[name].event is not None:
            event_loc = _owner(where, body or {}, parsed.defaults, ("event",))
            event_at[name] = (_line_of(root, event_loc) or 1, ".".join(map(str, event_loc)))
    for spec in topics.values():
        if spec.dead_letter is not None and spec.dead_letter not in topics:
            dl_loc = ("topics", spec.name, "dead_letter")
            raise TopicsFileError(
                f"{path}:{_line_of(root, dl_loc)}: {'.'.join(dl_loc)}: dead-letter topic "
                f"{spec.dead_letter!r} is not declared in this file"
            )
    return Topics(path, topics, event_at).with_prefix(prefix)


def _owner(where: tuple[str, str], body: dict[str, Any], defaults: dict[str, Any],
           loc: tuple[Any, ...]) -> tuple[Any, ...]:
    """Where the field at ``loc`` of a topic was written: the topic, or ``defaults:``."""
    if loc and loc[0] not in body and loc[0] in defaults:
        return ("defaults", *loc)
    return (*where, *loc)
