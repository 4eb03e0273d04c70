"""Decoding cost of the event formats, per record, against plain JSON.

Decodes ``--records`` order events (the shape of ``workflows.events.OrderPlaced``) as plain
JSON (``json.loads``, what a JSON topic costs), as registry-framed Avro and as CloudEvents in
binary mode, through ``hub.runtime.formats.EventFormats``, then validates each into the
model. The schema comes from a recorded registry reply (``httpx.MockTransport``) fetched once,
so what is measured is framing, Avro decoding and validation, not the network.

Prints one JSON line on stdout.

    python bench/formats.py [--records 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import time
from typing import Any

import fastavro
import httpx

from hub.runtime.formats import EventFormats
from hub.runtime.schema_registry import SchemaRegistry
from hub.runtime.topics import CloudEventsSpec, TopicSpec
from hub.runtime.wireformat import frame
from workflows.events import OrderPlaced

AVRO = {"type": "record", "name": "OrderPlaced", "fields": [
    {"name": "id", "type": "string"}, {"name": "customer_email", "type": "string"},
    {"name": "currency", "type": "string"},
    {"name": "lines", "type": {"type": "array", "items": {
        "type": "record", "name": "OrderLine", "fields": [
            {"name": "sku", "type": "string"}, {"name": "quantity", "type": "int"},
            {"name": "unit_price", "type": "int"}]}}},
    {"name": "total", "type": "long"}]}


def recorded_registry(avro_text: str) -> SchemaRegistry:
    """A registry client whose answer to every schema id is ``avro_text`` (the Confluent API's
    reply, recorded: no registry runs on this machine, see
    docs/decisions/schema-registry-testing.md). The client asks once per id, so a bench
    measures decoding, not the network."""
    reply = httpx.Response(200, json={"schema": avro_text})
    return SchemaRegistry("http://registry.recorded",
                          transport=httpx.MockTransport(lambda _: reply))


def order(i: int) -> dict[str, Any]:
    return {"id": f"o{i}", "customer_email": f"c{i}@example.com", "currency": "EUR",
            "lines": [{"sku": "SKU-1", "quantity": 2, "unit_price": 500}], "total": 1000}


async def main(n: int) -> dict[str, Any]:
    parsed = fastavro.parse_schema(AVRO)

    def avro(i: int) -> bytes:
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, parsed, order(i))
        return frame(1, buf.getvalue())

    registry = recorded_registry(json.dumps(AVRO))
    formats = EventFormats(registry)
    plain = [json.dumps(order(i)).encode() for i in range(n)]
    framed = [avro(i) for i in range(n)]
    ce_headers = [[("ce_specversion", b"1.0"), ("ce_id", f"e{i}".encode()),
                   ("ce_source", b"/shop"), ("ce_type", b"order.placed")] for i in range(n)]
    avro_spec = TopicSpec(name="orders", format="avro")
    ce_spec = TopicSpec(name="orders", cloudevents=CloudEventsSpec())
    out: dict[str, Any] = {"bench": "formats", "records": n}

    start = time.perf_counter()
    for value in plain:
        OrderPlaced.model_validate(json.loads(value))
    out["json_us_per_record"] = round((time.perf_counter() - start) / n * 1e6, 2)

    await formats.decode([], framed[0], avro_spec)  # the one registry fetch, not timed
    start = time.perf_counter()
    for value in framed:
        OrderPlaced.model_validate((await formats.decode([], value, avro_spec)).payload)
    out["avro_us_per_record"] = round((time.perf_counter() - start) / n * 1e6, 2)

    start = time.perf_counter()
    for value, headers in zip(plain, ce_headers, strict=True):
        OrderPlaced.model_validate((await formats.decode(headers, value, ce_spec)).payload)
    out["cloudevents_binary_us_per_record"] = round((time.perf_counter() - start) / n * 1e6, 2)
    out["registry_fetches"] = registry.fetches
    await registry.aclose()
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=20_000)
    print(json.dumps(asyncio.run(main(parser.parse_args().records))))
