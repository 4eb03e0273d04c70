"""The schema a pydantic event model stands for, in the registry's terms (Avro or JSON Schema).

``hub topics check`` asks the registry whether the model a topic declares is compatible with
the subject's latest version, so the model must be said as the registry would store it. JSON
Schema is pydantic's own; Avro is derived from it: records for objects, ``["null", T]`` with a
null default for optional fields, ``long``/``double`` for numbers, maps for free-form objects.
"""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import BaseModel

from hub.runtime.schema_registry import SchemaType

_SCALARS = {"string": "string", "integer": "long", "number": "double", "boolean": "boolean",
            "null": "null"}


class UnsupportedSchema(ValueError):
    """A model shape Avro cannot say (a union of several records, a tuple, ...)."""


def registry_schema(model: type[BaseModel], fmt: str) -> tuple[str, SchemaType]:
    """The schema text and type to register or check for ``model`` in format ``fmt``."""
    if fmt == "json-schema":
        return json.dumps(model.model_json_schema(), sort_keys=True), "JSON"
    if fmt == "protobuf":
        raise UnsupportedSchema("the hub derives no .proto from a model: register the "
                                "subject's schema yourself")
    return json.dumps(avro_schema(model), sort_keys=True), "AVRO"


def avro_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The Avro record of ``model`` (namespace: its module)."""
    root = model.model_json_schema(ref_template="#/$defs/{model}")
    defs = root.get("$defs", {})
    named: set[str] = set()
    namespace = model.__module__
    return _record(model.__name__, root, defs, named, namespace)  # type: ignore[return-value]


def _name(text: str) -> str:
    clean = re.sub(r"[^A-Za-z0-9_]", "_", text) or "Anonymous"
    return clean if not clean[0].isdigit() else "_" + clean


def _record(name: str, node: dict[str, Any], defs: dict[str, Any], named: set[str],
            namespace: str) -> dict[str, Any] | str:
    name = _name(name)
    if name in named:
        return name  # Avro names a type once; later uses refer to it
    named.add(name)
    required = set(node.get("required", []))
    fields = []
    for field, sub in node.get("properties", {}).items():
        kind = _type(f"{name}_{field}", sub, defs, named, namespace)
        entry: dict[str, Any] = {"name": _name(field), "type": kind}
        if field not in required:
            default = sub.get("default")
            if default is not None and not isinstance(kind, list):
                entry["default"] = default  # the model's own default, in its own type
            else:
                rest = kind if isinstance(kind, list) else [kind]
                entry = {"name": _name(field), "default": None,
                         "type": ["null", *[k for k in rest if k != "null"]]}
        if sub.get("description"):
            entry["doc"] = sub["description"]
        fields.append(entry)
    record: dict[str, Any] = {"type": "record", "name": name, "namespace": namespace,
                              "fields": fields}
    if node.get("description"):
        record["doc"] = node["description"]
    return record


def _type(hint: str, node: dict[str, Any], defs: dict[str, Any], named: set[str],
          namespace: str) -> Any:
    if "$ref" in node:
        ref = node["$ref"].rsplit("/", 1)[-1]
        return _type(ref, defs[ref], defs, named, namespace)
    for key in ("anyOf", "oneOf"):
        if key in node:
            options = [_type(hint, o, defs, named, namespace) for o in node[key]]
            flat: list[Any] = []
            for o in options:
                for x in o if isinstance(o, list) else [o]:
                    if x not in flat:
                        flat.append(x)
            if sum(isinstance(x, dict) and x.get("type") == "record" for x in flat) > 1:
                raise UnsupportedSchema(f"{hint}: a union of several records")
            return sorted(flat, key=lambda x: x != "null")
    if "enum" in node and all(isinstance(v, str) for v in node["enum"]):
        name = _name(node.get("title", hint))
        if name in named:
            return name
        named.add(name)
        return {"type": "enum", "name": name, "symbols": [_name(v) for v in node["enum"]]}
    if "const" in node:
        return _SCALARS.get(node.get("type", "string"), "string")
    kind = node.get("type")
    if kind == "object":
        if "properties" in node:
            return _record(node.get("title", hint), node, defs, named, namespace)
        extra = node.get("additionalProperties")
        values = (_type(f"{hint}_value", extra, defs, named, namespace)
                  if isinstance(extra, dict) else "string")
        return {"type": "map", "values": values}
    if kind == "array":
        if "prefixItems" in node:
            raise UnsupportedSchema(f"{hint}: a tuple")
        return {"type": "array",
                "items": _type(f"{hint}_item", node.get("items", {}), defs, named, namespace)}
    if isinstance(kind, str) and kind in _SCALARS:
        return _SCALARS[kind]
    if not kind:
        return "string"  # Any: carried as its JSON text
    raise UnsupportedSchema(f"{hint}: JSON Schema type {kind!r}")
