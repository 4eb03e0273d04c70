"""The chaos suite as a test: the default workload under kills, restarts and outages.

The driver runs as its own process (``python -m tests.chaos``), as CI and people run it, so it
owns its Postgres, broker, sandboxes and workers and shares nothing with this session's
fixtures. With ``HUB_TEST_BROKER=kafka`` it runs on Apache Kafka and restarts the broker too.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.chaos.driver import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.chaos]

TIMEOUT_S = 20 * 60
"""Far above a run's 6-8 minutes: a hung driver fails the test instead of the CI job."""

SUMMARY = re.compile(r"^chaos summary: (.*)$", re.MULTILINE)


def _run_driver(log: Path) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("HUB_") or k == "HUB_TEST_BROKER"}
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "tests.chaos"], cwd=ROOT, env=env,
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
        try:
            code = proc.wait(TIMEOUT_S)
        except BaseException:
            # SIGTERM lets the driver stop what it started; SIGKILL if it does not
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            raise
    return code, log.read_text(errors="replace")


def test_no_event_lost_no_effect_doubled_nothing_stuck_under_chaos(tmp_path: Path) -> None:
    code, output = _run_driver(tmp_path / "chaos.log")
    found = SUMMARY.search(output)
    assert found, f"the driver printed no summary (exit {code}):\n{output[-6000:]}"
    figures = dict(item.split("=", 1) for item in found.group(1).split())
    print(found.group(0))
    bad = {k: figures.get(k) for k in ("lost", "double_effects", "stuck", "inconsistent")
           if figures.get(k) != "0"}
    assert not bad and code == 0, f"{found.group(0)}\n{output[-6000:]}"
    assert int(figures["events"]) >= 2000
    assert int(figures["worker_kills"]) >= 20 and figures["pg_restarts"] == "1"
    if os.environ.get("HUB_TEST_BROKER") == "kafka":
        assert figures["broker_restarts"] == "1"
