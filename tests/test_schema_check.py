"""Declaring formats: topics.yaml's fields, the schema a model stands for, the registry's
verdict in ``hub topics check`` (recorded replies of the Confluent API through
``httpx.MockTransport``), and the AsyncAPI document's references."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import fastavro
import httpx
import pytest

from hub.runtime.asyncapi import build_asyncapi
from hub.runtime.schema_check import check_models
from hub.runtime.schema_of import avro_schema, registry_schema
from hub.runtime.schema_registry import SchemaRegistry
from hub.runtime.subscriber import SubscriberRegistry
from hub.runtime.topics import TopicsFileError, load_topics
from tests.test_subscribers import order
from workflows.events import OrderPlaced


def topics_file(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "topics.yaml"
    path.write_text(body)
    return path


FORMATS = """
topics:
  shop.orders:
    format: avro
    event: workflows.events:OrderPlaced
  shop.orders.json:
    format: json-schema
    subject: shop-orders-json
    event: workflows.events:OrderPlaced
  shop.orders.proto:
    format: protobuf
    event: workflows.events:OrderPlaced
  shop.cloud:
    event: workflows.events:OrderPlaced
    cloudevents:
      mode: structured
      routes:
        com.shop.order.placed: [on_placed]
"""


def test_a_topic_declares_its_format_subject_and_cloudevents(tmp_path: Path) -> None:
    topics = load_topics(topics_file(tmp_path, FORMATS), prefix="staging.")
    assert topics["staging.shop.orders"].registry_subject == "staging.shop.orders-value"
    assert topics["staging.shop.orders.json"].registry_subject == "shop-orders-json"
    cloud = topics["staging.shop.cloud"]
    assert cloud.registry_subject is None and cloud.cloudevents is not None
    assert cloud.cloudevents.routes == {"com.shop.order.placed": ["on_placed"]}


@pytest.mark.parametrize(("body", "error"), [
    ("topics:\n  a:\n    format: thrift\n",
     r"topics.yaml:3: topics.a.format: Input should be 'json', 'avro', 'json-schema' or "
     r"'protobuf'"),
    ("topics:\n  a:\n    subject: a-value\n",
     r"topics.yaml:2: topics.a: .*subject is only for a registry format"),
    ("topics:\n  a:\n    cloudevents:\n      mode: batch\n",
     r"topics.yaml:4: topics.a.cloudevents.mode: Input should be 'binary' or 'structured'"),
    ("topics:\n  a:\n    cloudevents:\n      routes: {t: on_x}\n",
     r"topics.yaml:4: topics.a.cloudevents.routes.t: Input should be a valid list"),
])
def test_a_wrong_format_declaration_names_its_line_and_field(
        tmp_path: Path, body: str, error: str) -> None:
    with pytest.raises(TopicsFileError, match=error):
        load_topics(topics_file(tmp_path, body))


def test_the_avro_form_of_a_model_round_trips_its_events() -> None:
    schema = fastavro.parse_schema(avro_schema(OrderPlaced))
    event = OrderPlaced.model_validate(order(1))
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, schema, event.model_dump(mode="json"))
    buf.seek(0)
    assert OrderPlaced.model_validate(fastavro.schemaless_reader(buf, schema, None)) == event


def test_defaults_keep_their_type_and_the_json_schema_form_is_pydantics() -> None:
    fields = {f["name"]: f for f in avro_schema(OrderPlaced)["fields"]}
    assert fields["customer_name"]["type"] == "string" and fields["customer_name"]["default"] == ""
    assert fields["total"]["type"] == "long" and "default" not in fields["total"]
    text, kind = registry_schema(OrderPlaced, "json-schema")
    assert kind == "JSON" and json.loads(text) == OrderPlaced.model_json_schema()


def verdicts(answers: dict[str, httpx.Response], asked: list[dict[str, Any]]
             ) -> httpx.MockTransport:
    """The Confluent API's replies to POST /compatibility/subjects/{s}/versions/latest."""

    def handle(request: httpx.Request) -> httpx.Response:
        subject = request.url.path.split("/")[3]
        asked.append({"path": request.url.path, "query": str(request.url.query, "ascii"),
                      "body": json.loads(request.content)})
        return answers[subject]

    return httpx.MockTransport(handle)


async def test_topics_check_reports_what_the_registry_finds_incompatible(
        tmp_path: Path) -> None:
    topics = load_topics(topics_file(tmp_path, FORMATS))
    asked: list[dict[str, Any]] = []
    registry = SchemaRegistry("http://registry.test", transport=verdicts({
        "shop.orders-value": httpx.Response(200, json={
            "is_compatible": False,
            "messages": ["READER_FIELD_MISSING_DEFAULT_VALUE: customer_email"]}),
        "shop-orders-json": httpx.Response(404, json={"error_code": 40401}),
    }, asked))
    checks = await check_models(topics, registry)
    await registry.aclose()
    assert [(c.topic, c.compatible, c.detail) for c in checks] == [
        ("shop.orders", False, "READER_FIELD_MISSING_DEFAULT_VALUE: customer_email"),
        ("shop.orders.json", True, "no version registered yet (the first one is compatible)"),
        ("shop.orders.proto", True, "not checked: the hub derives no .proto from a model"),
    ]
    assert not checks[2].checked and len(asked) == 2, "nothing asked for the protobuf topic"
    assert asked[0]["path"] == "/compatibility/subjects/shop.orders-value/versions/latest"
    assert asked[0]["query"] == "verbose=true"
    assert json.loads(asked[0]["body"]["schema"]) == avro_schema(OrderPlaced)
    assert "schemaType" not in asked[0]["body"], "Avro is the registry's default type"
    assert asked[1]["body"]["schemaType"] == "JSON"


def test_the_asyncapi_document_names_subject_format_registry_and_cloudevents(
        tmp_path: Path) -> None:
    doc = build_asyncapi(load_topics(topics_file(tmp_path, FORMATS)), SubscriberRegistry(),
                         bootstrap="k:9092", registry_url="http://registry:8080/apis/ccompat/v7")
    [avro] = [m for m in doc["components"]["messages"].values()
              if m.get("x-schema-registry", {}).get("format") == "avro"]
    assert avro["x-schema-registry"] == {"subject": "shop.orders-value", "format": "avro",
                                         "url": "http://registry:8080/apis/ccompat/v7"}
    assert avro["contentType"] == "application/vnd.apache.avro"
    assert avro["bindings"]["kafka"]["schemaIdPayloadEncoding"] == "confluent"
    assert doc["servers"]["kafka"]["bindings"]["kafka"]["schemaRegistryUrl"].endswith("/v7")
    cloud = [m for m in doc["components"]["messages"].values() if "x-cloudevents" in m]
    assert cloud and cloud[0]["x-cloudevents"]["mode"] == "structured"
