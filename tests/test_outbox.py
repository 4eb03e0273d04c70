"""The transactional outbox: events commit with the step, the relay publishes them."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from hub import Hub, StepContext, WorkflowResponse, create_step, create_workflow
from hub import wire as h
from hub.runtime.service import KafkaRuntime
from hub.runtime.topics import load_topics
from hub.settings import KafkaSettings
from tests.conftest import ROOT, worker_env
from tests.test_subscribers import read_all

pytestmark = pytest.mark.broker

async def _announce(inp: Any, ctx: StepContext) -> str:
    ctx.emit(inp["topic"], {"order_id": inp["id"], "n": 1}, key=inp["id"])
    ctx.emit(inp["topic"], {"order_id": inp["id"], "n": 2}, key=inp["id"])
    if inp.get("fail"):
        raise RuntimeError("emitted, then failed: nothing may be published")
    return "announced"


@create_workflow("ob-announce")
def ob_announce(inp: dict[str, Any]) -> WorkflowResponse:
    return WorkflowResponse(create_step("ob-announce-step", _announce)(inp))


def _topics(tmp_path: Path, prefix: str) -> Any:
    (tmp_path / "topics.yaml").write_text(f"topics:\n  {prefix}.out:\n    partitions: 2\n")
    return load_topics(tmp_path / "topics.yaml")


async def test_emitted_events_are_published_once_after_the_checkpoint(
        hub: Hub, kafka_bootstrap: str, prefix: str, tmp_path: Path) -> None:
    settings = KafkaSettings(bootstrap=kafka_bootstrap)
    async with KafkaRuntime(hub, settings, consume=False, topics=_topics(tmp_path, prefix)):
        run = await ob_announce(hub).run(input={"id": "A", "topic": f"{prefix}.out"})
        failed = await ob_announce(hub).run(
            input={"id": "B", "topic": f"{prefix}.out", "fail": True}, raise_on_error=False)
        assert failed.status == "compensated"
        records = await read_all(kafka_bootstrap, f"{prefix}.out", 2)
        for _ in range(100):  # published, then marked sent in the same transaction
            if (await hub.store.outbox_backlog())["unsent"] == 0:
                break
            await asyncio.sleep(0.05)
    assert [json.loads(r.value) for r in records] == [{"order_id": "A", "n": 1},
                                                       {"order_id": "A", "n": 2}]
    ids = [dict(r.headers)[h.EVENT_ID].decode() for r in records]
    assert len(set(ids)) == 2
    stored = await hub.store.outbox_for_execution(__import__("uuid").UUID(run.id))
    assert [str(r["id"]) for r in stored] == ids and all(r["sent_at"] for r in stored)


async def test_relay_killed_between_publish_and_commit_loses_nothing(
        hub: Hub, dsn: str, schema: str, kafka_bootstrap: str, prefix: str,
        tmp_path: Path) -> None:
    topic = f"{prefix}.out"
    settings = KafkaSettings(bootstrap=kafka_bootstrap)
    async with KafkaRuntime(hub, settings, consume=False, relay=False,
                            topics=_topics(tmp_path, prefix)):
        await ob_announce(hub).run(input={"id": "K", "topic": topic})
    backlog = await hub.store.outbox_backlog()
    assert backlog["unsent"] == 2, "committed with the checkpoint, not yet published"
    script = textwrap.dedent(f"""
        import asyncio, os, signal
        from hub import Hub
        from hub.runtime.kafka import start_producer
        from hub.runtime.outbox import OutboxRelay
        from hub.settings import KafkaSettings
        async def main():
            async with Hub(execute=False) as hub:
                producer = await start_producer(KafkaSettings(), {kafka_bootstrap!r})
                relay = OutboxRelay(hub, producer)
                async def publish_then_die(rows):
                    await relay._publish(rows)
                    os.kill(os.getpid(), signal.SIGKILL)   # before the mark-sent commit
                await hub.store.outbox_relay_batch(100, publish_then_die)
        asyncio.run(main())
    """)
    proc = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-c", script], env=worker_env(dsn, schema, "workflows"),
        cwd=ROOT, capture_output=True, timeout=60)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    assert (await hub.store.outbox_backlog())["unsent"] == 2, "the kill rolled the mark back"
    async with KafkaRuntime(hub, settings, consume=False, topics=_topics(tmp_path, prefix)):
        # the killed relay's rows stay locked until Postgres reaps its session (SKIP LOCKED
        # passes over them meanwhile); the relay's own loop then publishes them
        for _ in range(200):
            if (await hub.store.outbox_backlog())["unsent"] == 0:
                break
            await asyncio.sleep(0.05)
    assert (await hub.store.outbox_backlog())["unsent"] == 0
    records = await read_all(kafka_bootstrap, topic, 4)
    ids = [dict(r.headers)[h.EVENT_ID].decode() for r in records]
    assert len(records) == 4 and len(set(ids)) == 2, "published twice, each with its unique id"


@pytest.mark.parametrize("n", [1])
def test_outbox_rows_belong_to_the_checkpoint_transaction(n: int) -> None:
    from hub.store import queries

    sql = queries.CHECKPOINT_BATCH
    assert "INSERT INTO {s}.outbox" in sql and "FROM u," in sql, (
        "outbox rows are inserted only for checkpoints the epoch guard accepted")
