"""Crash recovery: SIGKILL a worker with 100 workflows in flight; a running one takes over.

Starts its own embedded PostgreSQL in a temporary folder (unless ``--database-url``), then:

  1. worker A (``python -m hub worker``, ``HUB_MODULES=bench.recovery_workflows``,
     ``HUB_LEASE_SECONDS=--lease``, ``HUB_POLL_INTERVAL=1``) starts and says it is ready;
  2. this process enqueues ``--workflows`` runs with ``Hub(execute=False)`` (unowned and due:
     A claims them through NOTIFY or its poll) and waits until A holds every one of them;
     each run's first step waits at a gate (a file), so nothing is applied yet;
  3. worker B starts and says it is ready; it claims nothing, A holds the leases and renews
     them;
  4. the gate opens; when ``--kill-at`` of the 3 x N effects exist, A is SIGKILLed;
  5. B claims the runs once their leases expire and finishes them. Measured: kill -> every
     run ``succeeded`` (polled in the database), and what became of the effects.

Each step applies its effect as ``INSERT ... ON CONFLICT (key) DO UPDATE SET applies =
applies + 1`` under its idempotency key. Invocation is at-least-once, so a step in flight at
the kill is invoked again by B with the same key: ``reinvocations`` (sum of applies - 1)
shows those, while the key keeps each effect single (``effects_duplicated``: rows beyond one
per key, 0 by construction of the unique key; it is the number a connector ignoring the key
would have doubled, which is ``keys_applied_more_than_once``).

Logs go to stderr; prints one JSON line on stdout at the end.

    python bench/recovery.py [--lease 5] [--workflows 100] [--kill-at 100]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import asyncpg

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.recovery_workflows import EFFECTS_DDL, WORKFLOW  # noqa: E402
from hub import Hub  # noqa: E402
from hub.logging import configure_logging  # noqa: E402
from hub.store.embedded import EmbeddedPostgres  # noqa: E402

MODULE = "bench.recovery_workflows"


def log(msg: str) -> None:
    print(f"[bench/recovery] {msg}", file=sys.stderr, flush=True)


def worker_env(dsn: str, schema: str, name: str, args: argparse.Namespace,
               gate: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
    path = [str(ROOT), *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])]
    env.update({
        "HUB_DATABASE_URL": dsn,
        "HUB_SCHEMA": schema,
        "HUB_MODULES": MODULE,
        "HUB_LEASE_SECONDS": str(args.lease),
        "HUB_POLL_INTERVAL": str(args.poll_interval),
        "HUB_WORKER_ID": name,
        "BENCH_GATE_FILE": str(gate),
        "BENCH_STEP_SLEEP": str(args.step_sleep),
        "PYTHONPATH": os.pathsep.join(path),
    })
    return env


async def spawn_worker(env: dict[str, str], procs: list[subprocess.Popen[bytes]]
                       ) -> subprocess.Popen[bytes]:
    """Start ``python -m hub worker`` and wait for its ``worker_ready`` line."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "hub", "worker", "--log-level", "warning"],
        env=env, stdout=subprocess.PIPE, cwd=ROOT,
    )
    procs.append(proc)
    assert proc.stdout is not None
    line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 60)
    try:
        event = json.loads(line)["event"]
    except (ValueError, KeyError, TypeError):
        event = None
    if event != "worker_ready":
        raise RuntimeError(f"worker {env['HUB_WORKER_ID']} did not get ready: {line!r} "
                           f"(exit code {proc.poll()})")
    return proc


async def wait_until(conn: asyncpg.Connection, sql: str, target: int, timeout: float,
                     what: str, interval: float = 0.01) -> int:
    deadline = time.monotonic() + timeout
    while True:
        value = int(await conn.fetchval(sql))
        if value >= target:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: {value} of {target} after {timeout}s")
        await asyncio.sleep(interval)


async def fetch_one(conn: asyncpg.Connection, sql: str) -> asyncpg.Record:
    row = await conn.fetchrow(sql)
    if row is None:
        raise RuntimeError(f"no row: {sql}")
    return row


def stop_worker(proc: subprocess.Popen[bytes]) -> int | None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    return proc.returncode


async def bench(dsn: str, args: argparse.Namespace, tmp: Path,
                procs: list[subprocess.Popen[bytes]]) -> dict[str, Any]:
    schema = args.schema or f"bench_rec_{uuid.uuid4().hex[:8]}"
    n = args.workflows
    total_effects = 3 * n
    gate = tmp / "gate-open"
    ex = f"{schema}.execution"
    result: dict[str, Any] = {
        "bench": "recovery", "cpus": os.cpu_count(), "python": platform.python_version(),
        "workflows": n, "lease_s": args.lease, "poll_interval_s": args.poll_interval,
        "step_sleep_s": args.step_sleep, "schema": schema,
    }
    conn = await asyncpg.connect(dsn)
    try:
        result["pg_version"] = await conn.fetchval("SHOW server_version")
        async with Hub(dsn, schema=schema, execute=False) as starter:  # also migrates
            await conn.execute(EFFECTS_DDL.format(schema=schema))
            log("starting worker A")
            a = await spawn_worker(worker_env(dsn, schema, "bench-worker-a", args, gate), procs)

            log(f"enqueueing {n} runs")
            await asyncio.gather(*(
                starter.start(WORKFLOW, {"n": i}, transaction_id=f"recovery-{i}", wait=False)
                for i in range(n)
            ))
            await wait_until(conn, f"SELECT count(*) FROM {ex} WHERE lease_owner = "
                             "'bench-worker-a'", n, 30, "runs held by A")

            log("starting worker B")
            b = await spawn_worker(worker_env(dsn, schema, "bench-worker-b", args, gate), procs)
            await asyncio.sleep(0.2)
            result["held_by_b_before_kill"] = int(await conn.fetchval(
                f"SELECT count(*) FROM {ex} WHERE lease_owner = 'bench-worker-b'"))

            log(f"opening the gate; SIGKILL A at {args.kill_at} effects")
            gate.touch()
            t_open = time.monotonic()
            await wait_until(conn, f"SELECT count(*) FROM {schema}.bench_effects",
                             args.kill_at, 30, "effects before the kill", interval=0.002)
            os.kill(a.pid, signal.SIGKILL)
            t_kill = time.monotonic()
            await asyncio.to_thread(a.wait)
            result["gate_to_kill_s"] = round(t_kill - t_open, 3)
            state = await fetch_one(conn,
                f"SELECT (SELECT count(*) FROM {schema}.bench_effects) AS effects, "
                f"(SELECT count(*) FROM {ex} WHERE status = 'succeeded') AS succeeded, "
                f"(SELECT count(*) FROM {ex} e, jsonb_each(e.steps) s "
                f" WHERE s.value->>'state' = 'invoking') AS invoking")
            result["effects_at_kill"] = state["effects"]
            result["succeeded_at_kill"] = state["succeeded"]
            result["steps_invoking_at_kill"] = state["invoking"]
            log(f"killed A: {dict(state)}")

            first_takeover: float | None = None
            deadline = t_kill + args.timeout
            while True:
                row = await fetch_one(conn,
                    f"SELECT count(*) FILTER (WHERE status = 'succeeded') AS done, "
                    f"count(*) FILTER (WHERE lease_owner = 'bench-worker-b' "
                    f"OR epoch > 2) AS b FROM {ex}")
                now = time.monotonic()
                if first_takeover is None and row["b"] > 0:
                    first_takeover = now - t_kill
                if row["done"] >= n:
                    break
                if now > deadline:
                    raise TimeoutError(f"only {row['done']} of {n} runs succeeded "
                                       f"{args.timeout}s after the kill")
                await asyncio.sleep(0.02)
            done_s = now - t_kill
            result["kill_to_first_takeover_s"] = (
                None if first_takeover is None else round(first_takeover, 3))
            result["kill_to_all_done_s"] = round(done_s, 3)
            result["within_target"] = done_s <= args.lease + 2

            eff = await fetch_one(conn,
                f"SELECT count(*) AS rows, count(DISTINCT key) AS keys, "
                f"coalesce(sum(applies), 0) AS applies, "
                f"count(*) FILTER (WHERE applies > 1) AS reapplied "
                f"FROM {schema}.bench_effects")
            result["effects_expected"] = total_effects
            result["effects_present"] = eff["keys"]
            result["effects_lost"] = total_effects - eff["keys"]
            result["effects_duplicated"] = eff["rows"] - eff["keys"]
            result["keys_applied_more_than_once"] = eff["reapplied"]
            result["reinvocations"] = int(eff["applies"]) - eff["rows"]
            runs = await fetch_one(conn,
                f"SELECT count(*) FILTER (WHERE status = 'succeeded') AS succeeded, "
                f"count(*) FILTER (WHERE epoch > 2) AS taken_over, "
                f"count(*) FILTER (WHERE parked IS NOT NULL) AS parked, "
                f"(SELECT count(*) FROM {ex} e, jsonb_each(e.steps) s "
                f" WHERE (s.value->>'attempts')::int > 1) AS steps_attempted_twice "
                f"FROM {ex}")
            result.update(dict(runs))
            result["worker_a_exit"] = a.returncode
            result["worker_b_exit"] = await asyncio.to_thread(stop_worker, b)
        with contextlib.suppress(asyncpg.PostgresError):
            await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    finally:
        await conn.close()
    return result


def remove_socket_dir(dsn: str) -> None:
    """The embedded server leaves its (empty) socket folder /tmp/hub-pg-<hash> behind."""
    host = parse_qs(urlsplit(dsn).query).get("host", [""])[0]
    if host.startswith("/tmp/hub-pg-"):
        with contextlib.suppress(OSError):
            os.rmdir(host)


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--lease", type=float, default=5.0, help="HUB_LEASE_SECONDS of the workers")
    ap.add_argument("--poll-interval", type=float, default=1.0, help="HUB_POLL_INTERVAL")
    ap.add_argument("--workflows", type=int, default=100)
    ap.add_argument("--kill-at", type=int, default=None,
                    help="effects present when A is killed (default: a third of 3 x workflows)")
    ap.add_argument("--step-sleep", type=float, default=0.02)
    ap.add_argument("--timeout", type=float, default=120.0, help="give up after the kill")
    ap.add_argument("--schema", default=None)
    ap.add_argument("--database-url", default=None, help="default: own embedded Postgres")
    ap.add_argument("--log-level", default="warning")
    args = ap.parse_args()
    if args.kill_at is None:
        args.kill_at = args.workflows
    configure_logging(args.log_level)
    # SIGTERM unwinds like Ctrl-C: workers stopped, embedded server stopped, folder removed
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    tmp = Path(tempfile.mkdtemp(prefix="bench_recovery_", dir="/tmp"))
    os.chmod(tmp, 0o755)
    server: EmbeddedPostgres | None = None
    procs: list[subprocess.Popen[bytes]] = []
    dsn = ""
    try:
        if args.database_url:
            dsn = args.database_url
        else:
            server = EmbeddedPostgres(tmp / "pgdata")
            log(f"starting embedded Postgres in {tmp}")
            dsn = server.start()
        result = asyncio.run(bench(dsn, args, tmp, procs))
    finally:
        for p in procs:
            with contextlib.suppress(Exception):
                stop_worker(p)
        if server is not None:
            server.stop()
            remove_socket_dir(dsn)
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
