"""``hub topics check`` against the registry: is each declared model compatible with its subject?

The registry applies the subject's own compatibility rule (BACKWARD, FULL, ...) to the schema
the model stands for (``hub.runtime.schema_of``), so a model change that would break the
readers or writers of a topic is found before it is deployed, not by the first record.
"""

from __future__ import annotations

from dataclasses import dataclass

from hub.runtime.schema_of import UnsupportedSchema, registry_schema
from hub.runtime.schema_registry import SchemaRegistry
from hub.runtime.topics import Topics


@dataclass(frozen=True)
class SchemaCheck:
    """One topic's verdict."""

    topic: str
    subject: str
    compatible: bool
    detail: str
    checked: bool = True
    """False for a protobuf topic: no .proto is derived from a model, nothing was asked."""

    def to_dict(self) -> dict[str, object]:
        return {"topic": self.topic, "subject": self.subject, "compatible": self.compatible,
                "checked": self.checked, "detail": self.detail}


async def check_models(topics: Topics, registry: SchemaRegistry) -> list[SchemaCheck]:
    """A verdict for every topic in a registry format that declares an event model."""
    out = []
    for spec in topics:
        subject = spec.registry_subject
        model = spec.event_model()
        if subject is None or model is None:
            continue
        if spec.format == "protobuf":
            out.append(SchemaCheck(spec.name, subject, True, "not checked: the hub derives no "
                                   ".proto from a model", checked=False))
            continue
        try:
            text, kind = registry_schema(model, spec.format)
        except UnsupportedSchema as exc:
            out.append(SchemaCheck(spec.name, subject, False,
                                   f"{spec.event} has no {spec.format} form: {exc}"))
            continue
        verdict = await registry.check_compatibility(subject, text, kind)
        if verdict.new_subject:
            detail = "no version registered yet (the first one is compatible)"
        elif verdict.compatible:
            detail = "compatible with the latest version"
        else:
            detail = "; ".join(verdict.messages) or "the registry says incompatible"
        out.append(SchemaCheck(spec.name, subject, verdict.compatible, detail))
    return out
