"""Crash recovery with real processes: SIGKILL a worker mid-step, another one finishes."""

from __future__ import annotations

import asyncio
import collections
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import IO, ClassVar

import asyncpg
import pytest

from hub import Hub
from tests.conftest import ROOT, worker_env
from tests.support.proxy import Proxy, free_port, to_tcp, to_unix
from tests.workflows import fence_flows  # noqa: F401  (registers fenced-effect)
from tests.workflows.crash_flows import EFFECTS_DDL

pytestmark = pytest.mark.slow

MODULE = "tests.workflows.crash_flows"
FENCE_MODULE = "tests.workflows.fence_flows"


def _drain(stream: IO[bytes], path: str | None) -> None:
    with open(path or os.devnull, "wb") as out:
        for line in stream:
            out.write(line)


@asynccontextmanager
async def worker(dsn: str, schema: str, name: str, lease: float = 2.0, module: str = MODULE,
                 **extra: str) -> AsyncIterator[subprocess.Popen[bytes]]:
    env = worker_env(dsn, schema, module, **{"HUB_LEASE_SECONDS": str(lease),
                     "HUB_POLL_INTERVAL": "0.5", "HUB_WORKER_ID": name, **extra})
    # HUB_TEST_WORKER_LOGS=<folder>: keep each worker's info log there (to read a failure)
    logs = os.environ.get("HUB_TEST_WORKER_LOGS")
    proc = subprocess.Popen([sys.executable, "-m", "hub", "worker", "--log-level",
                             "info" if logs else "warning"],
                            env=env, stdout=subprocess.PIPE, cwd=ROOT)
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 60)
        assert json.loads(line)["event"] == "worker_ready", line
        # drained, so a chatty worker never blocks on a full pipe
        threading.Thread(target=_drain, args=(proc.stdout, logs and f"{logs}/{name}.log"),
                         daemon=True).start()
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(proc.wait, 20)
            except subprocess.TimeoutExpired:
                proc.kill()


async def test_killed_worker_mid_step_is_taken_over_with_one_effect_per_step(
        dsn: str, schema: str) -> None:
    # medusajs/medusa#9077 and #13391: a step cut by a crash stayed `invoking` for ever
    conn = await asyncpg.connect(dsn)
    n = 20
    try:
        async with Hub(dsn, schema=schema, execute=False) as starter:
            await conn.execute(EFFECTS_DDL.format(schema=schema))
            async with worker(dsn, schema, "worker-a") as a:
                ids = [
                    (await starter.start("crash-three-steps", {"n": i, "sleep": 0.3},
                                         transaction_id=f"job-{i}", wait=False)).id
                    for i in range(n)
                ]
                deadline = time.monotonic() + 30
                while await conn.fetchval(f"SELECT count(*) FROM {schema}.effects") < n:
                    assert time.monotonic() < deadline, "worker A made no progress"
                    await asyncio.sleep(0.02)
                in_flight = await conn.fetchval(
                    f"SELECT count(*) FROM {schema}.execution "
                    "WHERE steps::text LIKE '%invoking%'")
                os.kill(a.pid, signal.SIGKILL)
                a.wait()
            assert in_flight > 0, "the kill must land while steps are running"
            async with worker(dsn, schema, "worker-b"):
                runs = [await starter.wait(i, timeout=60) for i in ids]
        assert all(r.status == "succeeded" for r in runs), [r.status for r in runs]
        rows = await conn.fetch(f"SELECT key, applies FROM {schema}.effects")
        keys = {r["key"] for r in rows}
        assert len(keys) == 3 * n, "every step's effect exists exactly once"
        reinvoked = [r["key"] for r in rows if r["applies"] > 1]
        assert reinvoked, "steps cut by the kill were invoked again (same idempotency key)"
        retried = [r for r in runs if any(s.attempts > 1 for s in r.steps.values())]
        assert retried
    finally:
        await conn.close()


async def test_postgres_restart_under_running_workers(pg_server: object, dsn: str,
                                                      schema: str) -> None:
    # dbos-inc/dbos-transact-py#716: a Postgres restart during recovery left runs pending
    if pg_server is None:
        pytest.skip("HUB_DATABASE_URL is set: the test cannot restart that server")
    async with Hub(dsn, schema=schema, execute=False):
        conn = await asyncpg.connect(dsn)
        await conn.execute(EFFECTS_DDL.format(schema=schema))
        await conn.close()
    n = 30
    async with worker(dsn, schema, "worker-r1", lease=3.0), \
            worker(dsn, schema, "worker-r2", lease=3.0):
        async with Hub(dsn, schema=schema, execute=False) as starter:
            ids = [(await starter.start("crash-three-steps", {"n": i, "sleep": 0.2},
                                        transaction_id=f"pg-{i}", wait=False)).id
                   for i in range(n)]
        await asyncio.sleep(0.5)
        await asyncio.to_thread(pg_server.restart)  # type: ignore[attr-defined]
        async with Hub(dsn, schema=schema, execute=False) as reader:
            runs = [await reader.wait(i, timeout=60) for i in ids]
    assert [r.status for r in runs] == ["succeeded"] * n
    conn = await asyncpg.connect(dsn)
    try:
        assert await conn.fetchval(f"SELECT count(*) FROM {schema}.effects") == 3 * n
    finally:
        await conn.close()


class _Effects(BaseHTTPRequestHandler):
    """An external system with no idempotency keys: GET finds an effect, POST makes one."""

    looked: ClassVar[collections.Counter[str]] = collections.Counter()
    made: ClassVar[collections.Counter[str]] = collections.Counter()

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.looked[self.path] += 1
        self.send_response(200 if self.made[self.path] else 404)
        self.end_headers()

    def do_POST(self) -> None:
        self.made[self.path] += 1
        self.send_response(201)
        self.end_headers()


def _partition(dsn: str) -> tuple[Proxy, Callable[[], str]]:
    """A cuttable TCP path to the test's Postgres, and the DSN through it (once entered)."""
    url = urllib.parse.urlsplit(dsn)
    query = dict(urllib.parse.parse_qsl(url.query))
    host = query.get("host") or url.hostname or "127.0.0.1"
    port = int(query.get("port") or url.port or 5432)
    proxy = Proxy(to_unix(f"{host}/.s.PGSQL.{port}") if host.startswith("/")
                  else to_tcp(host, port))
    user = url.username or "postgres"
    return proxy, lambda: f"postgresql://{user}@127.0.0.1:{proxy.port}{url.path}"


async def test_worker_cut_off_from_postgres_stops_its_steps_before_its_lease_runs_out(
        dsn: str, schema: str) -> None:
    # Found by the chaos suite on Apache Kafka: a worker that could not reach Postgres could
    # not renew its leases; another worker claimed the runs once they ran out and started the
    # steps the first one was still running. A step that looks its effect up before making
    # it (no idempotency key) then made it twice. A worker now cuts what it can no longer be
    # sure it holds, a quarter of a lease before the lease may run out.
    _Effects.looked, _Effects.made = collections.Counter(), collections.Counter()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Effects)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    n, lease = 12, 2.0
    extra = {"EFFECT_URL": f"http://127.0.0.1:{server.server_address[1]}",
             "EFFECT_GAP_S": str(4 * lease), "HUB_POLL_INTERVAL": "0.2"}
    try:
        partition, proxied = _partition(dsn)
        async with Hub(dsn, schema=schema, execute=False) as starter, partition, \
                worker(proxied(), schema, "cut-off", lease, FENCE_MODULE, **extra):
            ids = [(await starter.start("fenced-effect", {"key": f"k{i}"},
                                        transaction_id=f"k{i}", wait=False)).id
                   for i in range(n)]
            deadline = time.monotonic() + 30
            while len(_Effects.looked) < n:
                assert time.monotonic() < deadline, "the worker did not start the steps"
                await asyncio.sleep(0.05)
            async with worker(dsn, schema, "other", lease, FENCE_MODULE, **extra):
                partition.sever()  # every step of `cut-off` is between look and make
                runs = [await starter.wait(i, timeout=60) for i in ids]
        assert [r.status for r in runs] == ["succeeded"] * n
        assert all(r.steps["look-then-create"].attempts == 2 for r in runs)
        assert _Effects.made == {f"/effects/k{i}": 1 for i in range(n)}
    finally:
        server.shutdown()
        server.server_close()


async def test_worker_serves_its_metrics(dsn: str, schema: str) -> None:
    import urllib.request

    port = free_port()
    async with Hub(dsn, schema=schema, execute=False) as starter:
        conn = await asyncpg.connect(dsn)
        await conn.execute(EFFECTS_DDL.format(schema=schema))
        await conn.close()
        env_port = {"HUB_METRICS_PORT": str(port)}
        os.environ.update(env_port)
        try:
            async with worker(dsn, schema, "worker-metrics"):
                run = await starter.start("crash-three-steps", {"n": 1, "sleep": 0.0},
                                          wait=False)
                await starter.wait(run.id, timeout=30)
                body = await asyncio.to_thread(
                    lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics",
                                                   timeout=10).read().decode())
        finally:
            os.environ.pop("HUB_METRICS_PORT", None)
    assert 'hub_step_duration_seconds_count{outcome="ok",step="crash-a",' in body
    assert 'hub_worker_executions_finished_total{status="succeeded",' in body
    assert "hub_claim_seconds_count" in body
