"""`make dev` as a developer and a process manager see it: a short summary on the terminal,
the details in a log file, a waiting order to ship by hand, and a clean stop when make alone
is signalled."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import psutil
import pytest

from hub.cli.demo import demo_order
from tests.conftest import ROOT

pytestmark = pytest.mark.slow

NOISE = ("HTTP Request:", "InitProducerIdRequest")
COUNTS = re.compile(r"^events consumed (\d+) \| executions: running (\d+) waiting (\d+) "
                    r"succeeded (\d+) compensated (\d+) failed (\d+) \| dead letters (\d+)$")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class DevMode:
    """`make dev` in a session of its own, its output read line by line."""

    proc: subprocess.Popen[str]
    data: Path
    env: dict[str, str]
    lines: queue.Queue[str] = field(default_factory=queue.Queue)
    seen: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def next_line(self, deadline: float) -> str:
        line = self.lines.get(timeout=max(0.1, deadline - time.monotonic()))
        self.seen.append(line)
        return line

    def until(self, predicate: Any, timeout: float = 240) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.next_line(deadline)
            except queue.Empty:
                break
            if predicate(line):
                return line
        raise AssertionError("not seen; stdout:\n" + "".join(self.seen)
                             + "\nstderr:\n" + "".join(self.errors[-40:]))

    def beside(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "hub", *args], env=self.env, cwd=ROOT,
                              capture_output=True, text=True, timeout=120)

    def family(self) -> list[psutil.Process]:
        return [p for p in psutil.process_iter(["cmdline"])
                if str(self.data) in " ".join(p.info["cmdline"] or [])]


def _pump(stream: IO[str], sink: Any) -> None:
    for line in stream:
        sink(line)


@pytest.fixture
def dev_mode() -> Iterator[DevMode]:
    data = Path("/tmp") / f"hubdev-make-{os.getpid()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
    env.update({"HUB_DATA_DIR": str(data), "PYTHONPATH": str(ROOT)})
    args = f"--port {_free_port()} --sandbox-port 0 --demo-events 8"
    # -o: never reinstall the venv from the test; BIN: the interpreter running the tests
    proc = subprocess.Popen(["make", "-s", "-o", ".venv/.installed", "dev",
                             f"BIN={Path(sys.executable).parent}", f"DEV_ARGS={args}"],
                            env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    dev = DevMode(proc, data, env)
    assert proc.stdout is not None and proc.stderr is not None
    threading.Thread(target=_pump, args=(proc.stdout, dev.lines.put), daemon=True).start()
    threading.Thread(target=_pump, args=(proc.stderr, dev.errors.append), daemon=True).start()
    try:
        yield dev
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        for p in dev.family():
            p.kill()
        subprocess.run(["rm", "-rf", str(data)], check=False)


def _stops_with_everything(dev: DevMode, sig: signal.Signals) -> None:
    # hub dev and the broker are make's descendants; the embedded Postgres runs detached,
    # known by its data folder
    started = psutil.Process(dev.proc.pid).children(recursive=True) + dev.family()
    assert any("tansu" in " ".join(p.cmdline()) for p in started), started
    assert any("postgres" in " ".join(p.cmdline()) for p in started), started
    os.kill(dev.proc.pid, sig)  # make's process only, not its group
    dev.proc.wait(120)
    _, alive = psutil.wait_procs(started, timeout=60)
    assert not alive, f"left running after {sig.name}: {alive}"
    assert not (dev.data / "dev-runtime.json").exists(), "removed at stop"


def test_dev_mode_shows_a_summary_keeps_details_in_its_log_and_stops_on_sigterm(
        dev_mode: DevMode) -> None:
    dev = dev_mode
    first = dev.until(lambda ln: ln.startswith("hub dev is running"))
    summary = [first] + [dev.until(lambda ln: True) for _ in range(7)]
    text = "".join(summary)
    console = next(ln for ln in summary if ln.strip().startswith("console"))
    key = (dev.data / "dev-api-key").read_text().strip()
    assert "/ui" in console and f"log in with the dev key {key}" in console
    for part in ("API", "broker", "postgres", "sandboxes", "odoo http://127.0.0.1:"):
        assert part in text, text
    log_file = Path(re.search(r"^  log +(\S+)", text, re.M).group(1))  # type: ignore[union-attr]
    assert log_file == dev.data / "dev.log" and log_file.exists()
    size_at_start = log_file.stat().st_size

    # every 4th demo order waits for its shipment; the printed command delivers it
    header = dev.until(lambda ln: "waits for its shipment" in ln)
    order_id = header.split()[1]
    command: list[str] = []
    while (line := dev.until(lambda ln: True)).strip():
        command.append(line)
    sent = subprocess.run(["bash", "-c", "".join(command)], capture_output=True, text=True,
                          timeout=60)
    assert sent.returncode == 0, sent.stderr
    assert json.loads(sent.stdout)["signal"] == "success", sent.stdout
    deadline = time.monotonic() + 120
    status = None
    while time.monotonic() < deadline and status != "succeeded":
        shown = dev.beside("executions", "show", f"ship-order:{order_id}",
                           "--workflow", "ship-order")
        assert shown.returncode == 0, shown.stderr
        status = json.loads(shown.stdout)["status"]
    assert status == "succeeded", "the hand-made delivery finished the shipment"

    # an event published by hand to the dev mode's broker: no aiokafka noise either
    event_file = dev.data / "order.json"
    event_file.write_text(json.dumps(demo_order(1, "by-hand")[1]))
    published = dev.beside("publish", "order.placed", str(event_file))
    assert published.returncode == 0, published.stderr
    assert not any(n in published.stdout + published.stderr for n in NOISE), published.stderr

    # the live line: the eight demo orders (and the hand-published one) consumed
    dev.until(lambda ln: bool((m := COUNTS.match(ln.strip())) and int(m.group(1)) >= 11))
    assert log_file.stat().st_size > size_at_start, "the log file grows"
    _stops_with_everything(dev, signal.SIGTERM)
    noisy = [ln for ln in dev.seen + dev.errors if any(n in ln for n in NOISE)]
    assert not noisy, noisy
    assert "HTTP Request:" in log_file.read_text(), "the details are in the file"


def test_dev_mode_stops_when_make_alone_gets_sigint(dev_mode: DevMode) -> None:
    dev_mode.until(lambda ln: ln.startswith("hub dev is running"))
    dev_mode.until(lambda ln: bool(COUNTS.match(ln.strip())))
    _stops_with_everything(dev_mode, signal.SIGINT)
