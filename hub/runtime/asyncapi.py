"""The AsyncAPI 3.0 document of every topic: the contract upstream teams publish against.

Built from topics.yaml (channels, Kafka bindings, who publishes) and the pydantic event
models (payload schemas), seen from the hub's side: it *receives* what subscribers consume
and *sends* what it produces (outbox events, dead letters).
"""

from __future__ import annotations

import re
from typing import Any

from hub.runtime import constants as h
from hub.runtime.subscriber import SubscriberRegistry
from hub.runtime.topics import Topics


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


def build_asyncapi(topics: Topics, subscribers: SubscriberRegistry, *, bootstrap: str = "",
                   version: str = "1.0.0") -> dict[str, Any]:
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
            schema = _lift_defs(model.model_json_schema(ref_template="#/$defs/{model}"),
                                schemas)
            schemas[mname] = schema
            messages[mname] = {
                "name": mname,
                "title": mname,
                "summary": (model.__doc__ or "").strip().split("\n")[0],
                "contentType": "application/json",
                "headers": headers_schema,
                "payload": {"$ref": f"#/components/schemas/{mname}"},
                "x-schema-version": spec.schema_version,
                "x-accepted-versions": sorted(spec.versions),
            }
            channel["messages"][mname] = {"$ref": f"#/components/messages/{mname}"}
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
    return doc
