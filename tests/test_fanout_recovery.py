"""A worker SIGKILLed mid fan-out: another one takes the map over, each item's effect once."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import asyncpg
import pytest

from hub import Hub
from tests.conftest import worker_env
from tests.support.workers import workers
from tests.workflows import fanout_flows  # noqa: F401  (registers fx-crash-map)
from tests.workflows.crash_flows import EFFECTS_DDL

pytestmark = pytest.mark.slow

MODULE = "tests.workflows.fanout_flows"


async def test_a_worker_killed_mid_fan_out_is_taken_over_with_each_item_effect_once(
        dsn: str, schema: str) -> None:
    n = 12
    conn = await asyncpg.connect(dsn)

    def env(name: str) -> dict[str, str]:
        return worker_env(dsn, schema, MODULE, HUB_LEASE_SECONDS="2",
                          HUB_POLL_INTERVAL="0.5", HUB_WORKER_ID=name)

    try:
        async with Hub(dsn, schema=schema, execute=False) as starter:
            await conn.execute(EFFECTS_DDL.format(schema=schema))
            async with workers(env) as ws:
                a = await ws.start("fan-a")
                run = await starter.start("fx-crash-map",
                                          {"items": [{"n": i} for i in range(n)]}, wait=False)
                items = f"{schema}.fanout_item"
                deadline = time.monotonic() + 60
                while await conn.fetchval(
                        f"SELECT count(*) FROM {items} WHERE state = 'done'") < 3:
                    assert time.monotonic() < deadline, "worker A made no progress"
                    await asyncio.sleep(0.02)
                os.kill(a.pid, signal.SIGKILL)
                await asyncio.to_thread(a.wait)
                at_kill = {r["key"]: r["state"] for r in await conn.fetch(
                    f"SELECT key, state FROM {items}")}
                await ws.start("fan-b")
                final = await starter.wait(run.id, timeout=120)
        assert "invoking" in at_kill.values(), "the kill must land while items run"
        assert list(at_kill.values()).count("done") < n, "and before the map ended"
        assert final.status == "succeeded", final.error
        assert final.result == [{"n": i} for i in range(n)]

        effects = {r["key"]: r["applies"] for r in await conn.fetch(
            f"SELECT key, applies FROM {schema}.effects")}
        expected = {f"{run.id}:each-fx-crash-item[{i}]" for i in range(n)}
        assert set(effects) == expected, "one effect per item, under its own key"
        cut = [k for k, state in at_kill.items() if state == "invoking"]
        # an item cut past its call (most are: it dawdles after it) asked again, same key
        assert any(effects[f"{run.id}:each-fx-crash-item[{k}]"] >= 2 for k in cut), \
            "the items cut by the kill ran again, with the same idempotency key"
        attempts = {r["key"]: r["attempts"] for r in await conn.fetch(
            f"SELECT key, attempts FROM {items}")}
        done_before = [k for k, state in at_kill.items() if state == "done"]
        assert all(attempts[k] == 1 for k in done_before), "items done before are not re-run"
    finally:
        await conn.close()
