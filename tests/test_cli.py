"""The CLI end to end: `hub dev --once` starts its own embedded Postgres and runs the demo."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow


def test_dev_mode_runs_the_demo_on_an_embedded_postgres(tmp_path: Path) -> None:
    data = Path("/tmp") / f"hubdev-{os.getpid()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}  # all embedded
    env.update({"HUB_DATA_DIR": str(data), "PYTHONPATH": str(ROOT)})
    try:
        out = subprocess.run([sys.executable, "-m", "hub", "dev", "--once", "--log-level",
                              "error", "--sandbox-port", "0"], env=env, cwd=ROOT,
                             capture_output=True, text=True, timeout=180)
        assert out.returncode == 0, out.stderr
        hello = "hello-world      -> succeeded: {'message': 'Hello John from step two!'}"
        assert hello in out.stdout
        assert "order.placed     -> fulfil-order succeeded (payment pi_" in out.stdout
        assert "order.confirmed  -> ship-order waiting" in out.stdout
        assert "shipment         -> ship-order succeeded" in out.stdout
        assert "declined card    -> fulfil-order compensated; undone: open-fulfilment, " \
               "reserve-stock" in out.stdout
        leftovers = [p for p in psutil.process_iter(["cmdline"])
                     if str(data) in " ".join(p.info["cmdline"] or [])]
        assert not leftovers, "the dev hub stops the server it started"
    finally:
        subprocess.run(["rm", "-rf", str(data)], check=False)


def test_help_is_available_everywhere() -> None:
    for args in (["--help"], ["worker", "--help"], ["db", "migrate", "--help"]):
        out = subprocess.run([sys.executable, "-m", "hub", *args], cwd=ROOT,
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0 and "Usage" in out.stdout


DONE = "executions: running 0 waiting 1 succeeded 10 compensated 2 failed 0"


def test_dev_processes_demo_events_and_stops_cleanly_on_sigint() -> None:
    import signal
    import socket
    import time

    data = Path("/tmp") / f"hubdev2-{os.getpid()}"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
    env.update({"HUB_DATA_DIR": str(data), "PYTHONPATH": str(ROOT)})
    proc = subprocess.Popen([sys.executable, "-m", "hub", "dev", "--demo-events", "5",
                             "--port", str(port), "--log-level", "error",
                             "--sandbox-port", "0"], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if DONE in line:
                break
        # the one-of-each demo (hello-world, 1 good order shipped, 1 declined), then orders
        # 1-5 (the 5th declined); the warehouse ships every confirmed order through the
        # signed webhook but the 4th, left waiting for a delivery by hand
        assert any(DONE in ln for ln in lines), "".join(lines)
        assert (data / "dev-api-key").read_text().startswith("hub_")
        # beside the running dev mode, with no variable set, the CLI finds its broker and
        # its database on its own, and `hub settings` says where the broker came from
        def beside(*args: str) -> Any:
            out = subprocess.run([sys.executable, "-m", "hub", *args], env=env, cwd=ROOT,
                                 capture_output=True, text=True, timeout=120)
            assert out.returncode == 0, (args, out.stderr[-2000:])
            return json.loads(out.stdout)

        shown = {v["name"]: v for v in beside("settings", "--json")}
        assert shown["HUB_KAFKA_BOOTSTRAP"]["value"]
        assert "running dev mode" in shown["HUB_KAFKA_BOOTSTRAP"]["origin"]
        assert beside("lag", "--json"), "the dev mode's consumer group, seen from outside"
        assert "items" in beside("dlq", "list", "--json")
        assert beside("executions", "list", "--json")["items"]
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
        assert not (data / "dev-runtime.json").exists(), "removed at stop"
        leftovers = [p for p in psutil.process_iter(["cmdline"])
                     if str(data) in " ".join(p.info["cmdline"] or [])]
        assert not leftovers
    finally:
        if proc.poll() is None:
            proc.kill()
        subprocess.run(["rm", "-rf", str(data)], check=False)


def test_a_bad_setting_names_the_environment_variable() -> None:
    env = {**os.environ, "HUB_LEASE_SECONDS": "soon", "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "hub", "db", "migrate"], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "HUB_LEASE_SECONDS: Input should be a valid number" in out.stderr


def test_hub_sandbox_serves_the_systems_and_stops_on_sigint(tmp_path: Path) -> None:
    import json
    import signal

    import httpx

    env_file = tmp_path / "sandbox.env"
    proc = subprocess.Popen([sys.executable, "-m", "hub", "sandbox", "--port", "0",
                             "--env-file", str(env_file)], cwd=ROOT, stdout=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert proc.stdout is not None
        ready = json.loads(proc.stdout.readline())
        assert ready["event"] == "sandbox_ready"
        assert set(ready["systems"]) == {"stripe", "odoo", "hubspot", "contentful"}
        assert f"HUB_ODOO_BASE_URL={ready['systems']['odoo']}" in env_file.read_text()
        control = ready["control"]
        state = httpx.get(f"{control}/systems/odoo/state", timeout=10).json()
        assert "SKU-001" in state["stock"]
        refused = httpx.post(f"{ready['systems']['stripe']}/v1/payment_intents", timeout=10)
        assert refused.status_code == 401 and refused.json()["error"]["type"]
        proc.send_signal(signal.SIGINT)
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
