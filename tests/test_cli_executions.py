"""`hub executions` against a live database, in a subprocess."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import pytest

from hub import Hub
from tests.conftest import ROOT, worker_env
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
