"""topics.yaml: validation with line numbers, apply/check against the broker, AsyncAPI."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from hub.runtime.admin import reconcile
from hub.runtime.asyncapi import build_asyncapi
from hub.runtime.subscriber import SUBSCRIBERS
from hub.runtime.topics import TopicsFileError, load_topics
from hub.settings import KafkaSettings
from tests.conftest import ROOT, worker_env

pytestmark = pytest.mark.broker

def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "topics.yaml"
    p.write_text(text)
    return p


@pytest.mark.parametrize(("text", "where"), [
    ("topics:\n  a.b:\n    partitions: zero\n", r"topics.yaml:3: topics.a.b.partitions"),
    ("topics:\n  a.b:\n    partitons: 3\n", r"topics.yaml:3: topics.a.b.partitons: Extra"),
    ("topics:\n  a.b:\n    retention: forever\n", r"topics.yaml:3: topics.a.b.retention"),
    ("topics:\n  a.b:\n    dead_letter: a.b.dlq\n", r"topics.yaml:3: topics.a.b.dead_letter"),
    ("topics:\n  a.b:\n    event: not a path\n", r"topics.yaml:3: topics.a.b.event"),
    ("topics:\n  a b:\n    partitions: 1\n", r"topics.yaml:2: topics.a b: invalid topic"),
    ("topics: [\n", r"topics.yaml:2: not valid YAML"),
    ("topic:\n  a: {}\n", r"topics.yaml:1: topic: Extra inputs|topics.yaml:\d+: topics: Field"),
    ("defaults:\n  replication_factor: 1\n  cleanup_policy: delete\n  partitions: eight\n\n"
     "topics:\n  a.b:\n    description: x\n    retention: 1d\n",
     r"topics.yaml:4: defaults.partitions: Input should be a valid integer"),
])
def test_malformed_topics_file_names_file_line_and_field(tmp_path: Path, text: str,
                                                         where: str) -> None:
    with pytest.raises(TopicsFileError, match=where):
        load_topics(write(tmp_path, text))


MISSPELT = "topics:\n  a.b:\n    partitions: 1\n    event: workflows.events:OrderPlace\n"
MISSPELT_AT = ("topics.yaml:4: topics.a.b.event: event model 'workflows.events:OrderPlace' "
               "cannot be imported: module 'workflows.events' has no attribute 'OrderPlace'")


@pytest.mark.parametrize(("text", "where"), [
    (MISSPELT, re.escape(MISSPELT_AT)),
    ("defaults:\n  event: workflows.evnts:OrderPlaced\ntopics:\n  a.b: {}\n",
     r"topics.yaml:2: defaults.event: event model .* No module named 'workflows.evnts'"),
    ("topics:\n  a.b:\n    event: workflows.events:Event\n    partitions: 1\n"
     "  c.d:\n    event: hub.errors:HubError\n",
     r"topics.yaml:6: topics.c.d.event: event 'hub.errors:HubError' is not a pydantic model"),
])
def test_an_event_model_that_cannot_be_imported_names_file_line_and_field(
        tmp_path: Path, text: str, where: str) -> None:
    topics = load_topics(write(tmp_path, text), prefix="staging.")
    with pytest.raises(TopicsFileError, match=where):
        topics.import_models()


def test_cli_topics_check_refuses_a_misspelt_event_model_with_exit_2(
        tmp_path: Path, kafka_bootstrap: str) -> None:
    path = write(tmp_path, MISSPELT)
    env = {**os.environ, "HUB_KAFKA_BOOTSTRAP": kafka_bootstrap, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "hub", "topics", "check", "--file", str(path)],
                         env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip().splitlines() == [f"error: {path.parent}/{MISSPELT_AT}"]


def test_worker_start_refuses_a_misspelt_event_model_with_exit_2(
        tmp_path: Path, dsn: str, schema: str, kafka_bootstrap: str) -> None:
    path = write(tmp_path, MISSPELT)
    env = worker_env(dsn, schema, "workflows", HUB_KAFKA_BOOTSTRAP=kafka_bootstrap,
                     HUB_KAFKA_TOPICS_FILE=str(path), HUB_KAFKA_SUBSCRIBERS="subscribers")
    out = subprocess.run([sys.executable, "-m", "hub", "worker", "--consume", "--no-execute",
                          "--log-level", "warning"], env=env, cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 2, out.stderr[-2000:]
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {path.parent}/{MISSPELT_AT}"]
    assert "Traceback" not in out.stderr


def test_project_topics_file_is_valid_and_models_import() -> None:
    topics = load_topics(ROOT / "topics.yaml")
    assert set(topics.import_models()) >= {"order.placed", "order.confirmed"}
    assert topics["order.placed"].dead_letter == "order.placed.dlq"
    assert topics["order.placed"].event_model().__name__ == "OrderPlaced"  # type: ignore[union-attr]


async def test_apply_creates_missing_topics_then_reports_drift(
        tmp_path: Path, kafka_bootstrap: str, prefix: str) -> None:
    path = write(tmp_path, f"""
topics:
  {prefix}.a:
    partitions: 3
    retention: 1d
  {prefix}.b:
    partitions: 1
""")
    settings = KafkaSettings(bootstrap=kafka_bootstrap)
    checked = await reconcile(load_topics(path), settings, kafka_bootstrap, create=False)
    assert sorted(checked.missing) == [f"{prefix}.a", f"{prefix}.b"] and not checked.ok
    first = await reconcile(load_topics(path), settings, kafka_bootstrap, create=True)
    assert sorted(first.created) == [f"{prefix}.a", f"{prefix}.b"]
    again = await reconcile(load_topics(path), settings, kafka_bootstrap, create=True)
    assert again.created == [] and again.ok
    assert sorted(again.in_sync) == [f"{prefix}.a", f"{prefix}.b"]
    drifted = write(tmp_path, f"""
topics:
  {prefix}.a:
    partitions: 6
    retention: 2d
  {prefix}.b:
    partitions: 1
""")
    report = await reconcile(load_topics(drifted), settings, kafka_bootstrap, create=True)
    found = {(d.setting, d.declared, d.actual) for d in report.drift}
    assert ("partitions", "6", "3") in found
    assert ("retention.ms", str(2 * 86_400_000), str(86_400_000)) in found


def test_cli_topics_check_exit_code_and_json(tmp_path: Path, kafka_bootstrap: str,
                                             prefix: str) -> None:
    path = write(tmp_path, f"topics:\n  {prefix}.cli:\n    partitions: 2\n")
    env = {**os.environ, "HUB_KAFKA_BOOTSTRAP": kafka_bootstrap, "PYTHONPATH": str(ROOT)}
    check = subprocess.run([sys.executable, "-m", "hub", "topics", "check", "--file", str(path),
                            "--json"], env=env, capture_output=True, text=True, timeout=60)
    assert check.returncode == 1 and json.loads(check.stdout)["missing"] == [f"{prefix}.cli"]
    apply = subprocess.run([sys.executable, "-m", "hub", "topics", "apply", "--file",
                            str(path)], env=env, capture_output=True, text=True, timeout=60)
    assert apply.returncode == 0, apply.stderr
    assert f"created   {prefix}.cli" in apply.stdout
    again = subprocess.run([sys.executable, "-m", "hub", "topics", "apply", "--file",
                            str(path)], env=env, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and f"in sync   {prefix}.cli" in again.stdout


def test_asyncapi_document_describes_every_topic_and_schema() -> None:
    import subscribers.orders  # noqa: F401  registers on_order_placed

    doc = build_asyncapi(load_topics(ROOT / "topics.yaml"), SUBSCRIBERS, bootstrap="k:9092")
    assert doc["asyncapi"] == "3.0.0"
    channel = doc["channels"]["orderPlaced"]
    assert channel["address"] == "order.placed"
    assert channel["bindings"]["kafka"]["partitions"] == 8
    assert channel["x-dead-letter-topic"] == "order.placed.dlq"
    assert channel["x-producers"] == ["shop"] and channel["x-consumers"] == ["on_order_placed"]
    schema = doc["components"]["schemas"]["OrderPlaced"]
    assert set(schema["required"]) >= {"id", "customer_email", "currency", "lines", "total"}
    assert schema["properties"]["lines"]["items"]["$ref"] == "#/components/schemas/OrderLine"
    assert "OrderLine" in doc["components"]["schemas"]
    assert doc["operations"]["receiveOrderPlaced"]["action"] == "receive"
    assert doc["operations"]["sendOrderConfirmed"]["action"] == "send"
    text = yaml.safe_dump(doc)
    assert "#/$defs/" not in text, "every reference points into components"


def test_publish_validates_then_sends(tmp_path: Path, kafka_bootstrap: str, prefix: str) -> None:
    topics = write(tmp_path, f"""
topics:
  {prefix}.order.placed:
    partitions: 1
    event: workflows.events:OrderPlaced
""")
    env = {**os.environ, "HUB_KAFKA_BOOTSTRAP": kafka_bootstrap, "PYTHONPATH": str(ROOT),
           "HUB_KAFKA_TOPICS_FILE": str(topics)}
    created = subprocess.run([sys.executable, "-m", "hub", "topics", "apply", "--file",
                              str(topics)], env=env, capture_output=True, text=True, timeout=60)
    assert created.returncode == 0, created.stderr  # Apache Kafka here does not auto-create
    good = subprocess.run([sys.executable, "-m", "hub", "publish", f"{prefix}.order.placed",
                           str(ROOT / "examples" / "order.placed.json")], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert good.returncode == 0, good.stderr
    assert f"published 1 event(s) to {prefix}.order.placed" in good.stdout
    bad = tmp_path / "bad.json"
    bad.write_text('{"id": "x"}')
    refused = subprocess.run([sys.executable, "-m", "hub", "publish", f"{prefix}.order.placed",
                              str(bad)], env=env, cwd=ROOT, capture_output=True, text=True,
                             timeout=60)
    assert refused.returncode == 1 and "does not match workflows.events:OrderPlaced" in (
        refused.stderr)
