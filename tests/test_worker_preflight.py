"""A worker builds every connector its workflows resolve before it claims anything."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import asyncpg
import pytest

from hub.sandbox.server import SandboxServer
from tests.conftest import ROOT, worker_env

pytestmark = pytest.mark.slow

SYSTEMS = ("HUB_STRIPE_", "HUB_ODOO_", "HUB_HUBSPOT_", "HUB_CONTENTFUL_")


async def test_a_worker_without_connector_settings_refuses_to_start_naming_them(
        dsn: str, schema: str) -> None:
    env = {k: v for k, v in worker_env(dsn, schema, "workflows").items()
           if not k.startswith(SYSTEMS)}
    done = subprocess.run([sys.executable, "-m", "hub", "worker", "--log-level", "warning"],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    for connector, variable in (("erp", "HUB_ODOO_BASE_URL"), ("erp", "HUB_ODOO_DATABASE"),
                                ("payments", "HUB_STRIPE_API_KEY"),
                                ("crm", "HUB_HUBSPOT_ACCESS_TOKEN"),
                                ("cms", "HUB_CONTENTFUL_SPACE_ID")):
        line = next((ln for ln in done.stderr.splitlines() if ln.strip().startswith(
            f"{connector}:")), "")
        assert variable in line, done.stderr
    assert "worker_ready" not in done.stdout and "Traceback" not in done.stderr
    conn = await asyncpg.connect(dsn)
    try:  # it never opened its store: no schema migrated, so nothing claimed
        assert await conn.fetchval(
            "SELECT count(*) FROM information_schema.schemata WHERE schema_name = $1",
            schema) == 0
    finally:
        await conn.close()


def test_a_worker_with_every_connector_setting_starts(
        dsn: str, schema: str, sandboxes: SandboxServer) -> None:
    env = worker_env(dsn, schema, "workflows")  # the sandboxes' settings are in os.environ
    proc = subprocess.Popen([sys.executable, "-m", "hub", "worker", "--no-consume",
                             "--log-level", "warning"], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line, proc.stderr.read() if proc.stderr else ""
        ready = json.loads(line)
        assert ready["event"] == "worker_ready" and "fulfil-order" in ready["workflows"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
