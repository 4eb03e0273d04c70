"""The AsyncAPI 3.0 document of every topic: the contract upstream teams publish against.

Built from topics.yaml (channels, Kafka bindings, who publishes) and the pydantic event
models (payload schemas; for a registry-framed topic its subject, format and the Kafka
binding of the schema id; for a CloudEvents topic its mode and routes), seen from the hub's
side: it *receives* what subscribers consume and *sends* what it produces (outbox events, dead
letters).
"""

from __future__ import annotations

import re
from typing import Any

from hub import wire as h
from hub.runtime.subscriber import SubscriberRegistry
from hub.runtime.topics import Topics, TopicSpec


def _ident(topic: str) -> str:
    parts = re.split(r"[^A-Za-z0-9]+", topic)
    return parts[0] + "".join(p[:1].upper() + p[1:] for p in parts[1:])


def _lift_defs(schema: dict[str, Any], schemas: dict[str, Any]) -> dict[str, Any]:
    """Move pydantic's ``$defs`` into components/schemas and rewrite the references."""
    defs = schema.pop("$defs", {})
    for name, sub in defs.items():
        schemas.setdefault(name, sub)

    def rewrite(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: (v.replace("#/$defs/", "#/components/schemas/") if k == "$ref"
                        and isinstance(v, str) else rewrite(v)) for k, v in node.items()}
        if isinstance(node, list):
            return [rewrite(x) for x in node]
        return node

    for name in defs:
        schemas[name] = rewrite(schemas[name])
    return rewrite(schema)  # type: ignore[no-any-return]


def _formats(spec: TopicSpec, registry_url: str) -> dict[str, Any]:
    """What a message of a registry-framed or CloudEvents topic adds: the Kafka message
    binding for the schema id in the payload, the subject and format, the CloudEvents mode."""
    extra: dict[str, Any] = {}
    subject = spec.registry_subject
    if subject is not None:
        extra["contentType"] = ("application/vnd.apache.avro" if spec.format == "avro"
                                else "application/json")
        extra["bindings"] = {"kafka": {
            "bindingVersion": "0.5.0", "schemaIdLocation": "payload",
            "schemaIdPayloadEncoding": "confluent",
            "schemaLookupStrategy": "TopicNameStrategy" if spec.subject is None
            else "subject"}}
        extra["x-schema-registry"] = {"subject": subject, "format": spec.format,
                                      **({"url": registry_url} if registry_url else {})}
    if spec.cloudevents is not None:
        extra["x-cloudevents"] = {
            "specversion": "1.0", "mode": spec.cloudevents.mode,
            "accepts": ["binary", "structured"], "source": spec.cloudevents.source,
            **({"type": spec.cloudevents.type} if spec.cloudevents.type else {}),
            **({"routes": spec.cloudevents.routes} if spec.cloudevents.routes else {})}
    return extra


def build_asyncapi(topics: Topics, subscribers: SubscriberRegistry, *, bootstrap: str = "",
                   version: str = "1.0.0", registry_url: str = "") -> dict[str, Any]:
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    schemas: dict[str, Any] = {}
    headers_schema = {
        "type": "object",
        "properties": {
            h.EVENT_ID: {"type": "string", "description": "unique id of the event"},
            h.SCHEMA_VERSION: {"type": "string", "description": "schema version (integer)"},
        },
    }
    for spec in topics:
        cid = _ident(spec.name)
        model = spec.event_model()
        channel: dict[str, Any] = {
            "address": spec.name,
            "description": spec.description or f"Kafka topic {spec.name}",
            "bindings": {"kafka": {
                "bindingVersion": "0.5.0",
                "partitions": spec.partitions,
                "replicas": spec.replication_factor,
                "topicConfiguration": {
                    "retention.ms": spec.retention_ms,
                    "cleanup.policy": spec.cleanup_policy.split(","),
                },
            }},
            "messages": {},
        }
        if model is not None:
            mname = model.__name__
            formats = _formats(spec, registry_url)
            # a model framed or enveloped on this topic is a message of its own
            key = f"{mname}_{cid}" if formats else mname
            schema = _lift_defs(model.model_json_schema(ref_template="#/$defs/{model}"),
                                schemas)
            schemas[mname] = schema
            messages[key] = {
                "name": mname,
                "title": mname,
                "summary": (model.__doc__ or "").strip().split("\n")[0],
                "contentType": "application/json",
                "headers": headers_schema,
                "payload": {"$ref": f"#/components/schemas/{mname}"},
                "x-schema-version": spec.schema_version,
                "x-accepted-versions": sorted(spec.versions),
                **formats,
            }
            channel["messages"][key] = {"$ref": f"#/components/messages/{key}"}
        if spec.dead_letter:
            channel["x-dead-letter-topic"] = spec.dead_letter
        if spec.producers:
            channel["x-producers"] = spec.producers
        consumers = sorted({*spec.consumers,
                            *(s.name for s in subscribers.for_topic(spec.name))})
        if consumers:
            channel["x-consumers"] = consumers
        channels[cid] = channel
        refs = [{"$ref": f"#/channels/{cid}/messages/{m}"} for m in channel["messages"]]
        if consumers:
            operations[f"receive{cid[:1].upper()}{cid[1:]}"] = {
                "action": "receive",
                "channel": {"$ref": f"#/channels/{cid}"},
                "summary": f"consumed by {', '.join(consumers)}",
                "messages": refs,
            }
        if "hub" in spec.producers:
            operations[f"send{cid[:1].upper()}{cid[1:]}"] = {
                "action": "send",
                "channel": {"$ref": f"#/channels/{cid}"},
                "summary": "published by the hub (outbox relay or dead letters)",
                "messages": refs,
            }
    doc: dict[str, Any] = {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Commerce integration hub",
            "version": version,
            "description": "Topics the hub consumes and produces, with their event schemas.",
        },
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": schemas},
    }
    if bootstrap:
        host = bootstrap.split(",")[0]
        doc["servers"] = {"kafka": {"host": host, "protocol": "kafka"}}
        if registry_url:
            doc["servers"]["kafka"]["bindings"] = {"kafka": {
                "bindingVersion": "0.5.0", "schemaRegistryUrl": registry_url}}
    return doc
