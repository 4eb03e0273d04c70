"""A Jaeger (v2, all-in-one: OTLP receiver, in-memory storage, query API) on loopback ports,
the trace backend of the tracing test. ``scripts/install-jaeger`` builds its binary once per
machine (a lock keeps parallel sessions from building it twice)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.proxy import free_port

ROOT = Path(__file__).resolve().parents[2]

CONFIG = """\
service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
    logs:
      level: warn
extensions:
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: 10000
  jaeger_query:
    enable_tracing: false  # else it traces itself to localhost:4317
    storage:
      traces: memstore
    http:
      endpoint: 127.0.0.1:{query_port}
    grpc:
      endpoint: 127.0.0.1:{query_grpc_port}
receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:{otlp_port}
processors:
  batch:
    timeout: 100ms
exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
"""


def jaeger_binary() -> Path:
    """The binary's path, built first if this machine has none (minutes, once)."""
    out = subprocess.run([str(ROOT / "scripts" / "install-jaeger"), "--print"], check=True,
                         stdout=subprocess.PIPE, text=True, timeout=3600)
    return Path(out.stdout.strip().splitlines()[-1])


@dataclass
class Jaeger:
    process: subprocess.Popen[bytes]
    otlp_endpoint: str  # OTEL_EXPORTER_OTLP_ENDPOINT
    query_url: str

    def trace(self, trace_id: str) -> dict[str, Any] | None:
        """The trace as the query API returns it (``/api/traces/{id}``), or None if unknown."""
        try:
            with urllib.request.urlopen(f"{self.query_url}/api/traces/{trace_id}",
                                        timeout=5) as reply:
                body = json.loads(reply.read())
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise
        data = body.get("data") or []
        return data[0] if data else None

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()


def start_jaeger(folder: Path, timeout: float = 60.0) -> Jaeger:
    """Start Jaeger with its ports on loopback; returns once its query API answers."""
    binary = jaeger_binary()
    otlp, query, grpc = free_port(), free_port(), free_port()
    config = folder / "jaeger.yaml"
    config.write_text(CONFIG.format(otlp_port=otlp, query_port=query, query_grpc_port=grpc))
    log = open(folder / "jaeger.log", "wb")  # noqa: SIM115 (closed with the process)
    process = subprocess.Popen([str(binary), "--config", str(config)], stdout=log,
                               stderr=subprocess.STDOUT, env=dict(os.environ))
    log.close()
    jaeger = Jaeger(process, f"http://127.0.0.1:{otlp}", f"http://127.0.0.1:{query}")
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"jaeger exited ({process.returncode}): "
                               f"{(folder / 'jaeger.log').read_text()[-2000:]}")
        try:  # the query API (an extension) is up before the OTLP receiver: both answer
            with urllib.request.urlopen(f"{jaeger.query_url}/api/services", timeout=2):
                socket.create_connection(("127.0.0.1", otlp), timeout=2).close()
                return jaeger
        except (urllib.error.URLError, OSError):
            if time.monotonic() > deadline:
                jaeger.stop()
                raise RuntimeError(f"jaeger's query API did not answer in {timeout}s: "
                                   f"{(folder / 'jaeger.log').read_text()[-2000:]}") from None
            time.sleep(0.2)
