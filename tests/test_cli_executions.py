"""`hub executions` against a live database, in a subprocess."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import pytest

from hub import Hub
from tests.conftest import ROOT, worker_env
from tests.support.polling import until
from tests.workflows.async_flows import tw_approval

pytestmark = pytest.mark.slow


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hub", "executions", *args], env=env,
                          cwd=ROOT, capture_output=True, text=True, timeout=120)


async def test_list_show_and_cancel_from_the_cli(hub: Hub, dsn: str, schema: str) -> None:
    run = await tw_approval(hub).run(input={"id": "cli"}, transaction_id="approval:cli")
    assert run.status == "waiting"
    env = worker_env(dsn, schema, "tests.workflows.async_flows")
    # the CLI runs in a thread: this test's event loop drives the executor meanwhile
    listed = await asyncio.to_thread(cli, env, "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [i["transaction_id"] for i in json.loads(listed.stdout)["items"]] == ["approval:cli"]
    shown = await asyncio.to_thread(cli, env, "show", "approval:cli")
    assert shown.returncode == 0 and json.loads(shown.stdout)["steps"]
    missing = await asyncio.to_thread(cli, env, "show", "nope")
    assert missing.returncode == 1 and "no execution" in missing.stderr
    cancelled = await asyncio.to_thread(cli, env, "cancel", "approval:cli", "--reason",
                                        "customer called")
    assert cancelled.returncode == 0, cancelled.stderr
    assert (await hub.wait("approval:cli", timeout=20)).status == "cancelled"


async def test_wake_a_sleep_from_the_cli(hub: Hub, dsn: str, schema: str) -> None:
    from tests.workflows import sleep_flows

    assert sleep_flows  # registers sleep-between
    await hub.start("sleep-between", {"seconds": 3 * 86400}, transaction_id="cli-sleep",
                    wait=False)

    async def sleeping() -> bool:
        return (await hub.get_run("cli-sleep")).steps["sleep"].state == "waiting"

    await until(sleeping, 30, what="the run sleeps")
    env = worker_env(dsn, schema, "tests.workflows.sleep_flows")
    refused = await asyncio.to_thread(cli, env, "wake", "cli-sleep", "sl-before")
    assert refused.returncode == 1 and "not a sleep" in refused.stderr
    woken = await asyncio.to_thread(cli, env, "wake", "cli-sleep", "sleep")
    assert woken.returncode == 0, woken.stderr
    assert json.loads(woken.stdout)["signal"] == "wake"
    assert (await hub.wait("cli-sleep", timeout=20)).status == "succeeded"


async def test_jobs_list_pause_resume_from_the_cli(hub: Hub, dsn: str, schema: str) -> None:
    import tests.workflows.jobs_flows  # noqa: F401
    from hub.runtime.scheduler import Scheduler

    await Scheduler(hub).sync()
    env = worker_env(dsn, schema, "tests.workflows.jobs_flows")

    def jobs(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "hub", "jobs", *args], env=env, cwd=ROOT,
                              capture_output=True, text=True, timeout=120)

    listed = await asyncio.to_thread(jobs, "list", "--json")
    assert listed.returncode == 0, listed.stderr
    [job] = [j for j in json.loads(listed.stdout) if j["name"] == "tj-nightly"]
    assert job["paused"] is False and job["next_tick"]
    assert (await asyncio.to_thread(jobs, "pause", "tj-nightly")).returncode == 0
    after = json.loads((await asyncio.to_thread(jobs, "list", "--json")).stdout)
    assert next(j for j in after if j["name"] == "tj-nightly")["paused"] is True
    assert (await asyncio.to_thread(jobs, "resume", "tj-nightly")).returncode == 0


async def test_db_purge_removes_only_finished_executions(hub: Hub, dsn: str,
                                                         schema: str) -> None:
    from tests.test_operations import op_manual, op_retained

    await op_retained(hub).run(input={"sku": "P"})
    live = await op_manual(hub).run(input={"sku": "Q"})
    env = worker_env(dsn, schema, "tests.test_operations")
    out = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "hub", "db", "purge"], env=env, cwd=ROOT,
        capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "purged 1 finished execution(s)" in out.stdout
    assert (await hub.get_run(live.id)).status == "waiting"
