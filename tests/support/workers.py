"""``hub worker`` subprocesses for tests: started until ready, stopped whatever happens."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from typing import Any

from tests.conftest import ROOT


class Workers:
    """``hub worker`` subprocesses; whatever is left is stopped (SIGTERM, then SIGKILL).

    ``exited`` holds when each one's process was seen gone: no code of it runs after that.
    With ``logs``, each one's JSON log lines are kept (``lines``) instead of shown.
    """

    def __init__(self, env: Callable[[str], dict[str, str]], *, log_level: str = "warning",
                 logs: bool = False) -> None:
        self.env = env
        self.log_level = log_level
        self.logs = logs
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.lines: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.exited: dict[int, float] = {}

    async def start(self, name: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "hub", "worker", "--log-level", self.log_level,
             "--json-logs"], env=self.env(name), cwd=ROOT, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE if self.logs else None)
        self.procs[name] = proc
        if self.logs:
            threading.Thread(target=self._read_logs, args=(name, proc), daemon=True).start()
        assert proc.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 90)
        assert json.loads(line)["event"] == "worker_ready", line
        return proc

    def _read_logs(self, name: str, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stderr is not None
        for raw in proc.stderr:
            with contextlib.suppress(ValueError):
                entry = json.loads(raw)
                if isinstance(entry, dict):
                    self.lines[name].append(entry)

    async def stop(self, name: str) -> int | None:
        """SIGTERM (the worker hands what it holds over), wait for the exit."""
        proc = self.procs[name]
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(proc.wait, 60)
            except subprocess.TimeoutExpired:
                proc.kill()
                await asyncio.to_thread(proc.wait, 10)
        self.exited.setdefault(proc.pid, time.time())
        return proc.returncode

    async def stop_all(self) -> None:
        await asyncio.gather(*(self.stop(n) for n in self.procs))

    def pids(self) -> dict[int, str]:
        return {p.pid: n for n, p in self.procs.items()}

    def events(self, event: str) -> list[tuple[str, dict[str, Any]]]:
        return [(n, e) for n, lines in self.lines.items() for e in lines
                if e.get("event") == event]


@contextlib.asynccontextmanager
async def workers(env: Callable[[str], dict[str, str]], **kw: Any) -> AsyncIterator[Workers]:
    ws = Workers(env, **kw)
    try:
        yield ws
    finally:
        await ws.stop_all()
