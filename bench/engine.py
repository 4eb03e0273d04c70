"""Engine throughput, latency, round trips and idle load of the hub (one process, one Postgres).

Starts its own embedded PostgreSQL (server defaults: fsync and synchronous_commit on; only
``log_min_duration_statement`` is added) in a fresh temporary folder unless ``--database-url``
is given, opens a ``Hub`` (executor in-process) and runs a workflow of three trivial steps
(each returns a small dict):

  warm-up     ``--warmup`` runs one at a time (not measured);
  sequential  ``--sequential`` runs one at a time: start-to-result p50/p99;
  concurrent  N runs driven by C asyncio tasks, each looping ``await wf(hub).run(input=...)``:
              workflows/s and start-to-result p50/p99, and per workflow:
              ``round_trips_per_workflow``  statements on the hub's schema the server ran
                                            (pg_stat_statements, reset before the phase);
              ``pool_reset_round_trips_...`` the reset asyncpg's pool sends on every release
                                            (one message of 4 statements);
              ``commits_per_workflow``      pg_stat_database.xact_commit delta (every
                                            transaction, read-only ones too, e.g. the
                                            listener reading notifications);
              ``write_commits_per_workflow`` transaction ids used (transactions that wrote,
                                            i.e. WAL flushes at commit);
              ``client_statements_...``     ``hub.store.statements`` delta;
              ``batching``                  group-commit flushes and rows (checkpoints, starts);
              CPU of this process and of the server's processes.
  connector   ``--connector-workflows`` runs (``--concurrency`` tasks) of a one-step workflow
              whose step makes 2 HTTP calls through an ``HttpConnector`` to a loopback
              server in this process, in alternating rounds with the calls recorded in the
              lineage (``ctx`` passed) and not (``ctx=None``: nothing recorded, no
              Idempotency-Key header): mean and p50 per workflow, WAL bytes per workflow,
              and the cost per recorded call (time and WAL difference / calls, and the
              ``connector_call`` table's size per row).
  idle        the same hub open with nothing to do for ``--idle-seconds``: statements/s the
              server executed for it.

A run that fails or does not settle within ``--run-timeout`` is counted, not waited for; the
throughput is successes over the time to the last success. Executions left parked or
unfinished are counted from the database. Logs go to stderr; prints one JSON line at the end.

    python bench/engine.py [--workflows 3000] [--concurrency 50] [--pool-max 20]
                           [--idle-seconds 20] [--lease-seconds S] [--database-url DSN]
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
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import asyncpg
import psutil
from pydantic import AnyHttpUrl, BaseModel

from connectors.base import ConnectorSettings, HttpConnector
from hub import (
    Hub,
    StepContext,
    WorkflowDefinition,
    WorkflowResponse,
    create_step,
    create_workflow,
)
from hub.logging import configure_logging
from hub.store.embedded import EmbeddedPostgres

# --- the workflow ------------------------------------------------------------------------------


class BenchInput(BaseModel):
    n: int


@create_step("bench-engine-a")
async def step_a(inp: BenchInput, ctx: StepContext) -> dict[str, Any]:
    return {"a": inp.n}


@create_step("bench-engine-b")
async def step_b(inp: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    return {"b": inp["a"] + 1}


@create_step("bench-engine-c")
async def step_c(inp: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    return {"c": inp["b"] + 1}


def _compose(inp: BenchInput) -> WorkflowResponse:
    return WorkflowResponse(step_c(step_b(step_a(inp))))


three_steps: WorkflowDefinition = create_workflow("bench-engine-three-steps", _compose)


class ConnectorInput(BaseModel):
    n: int
    record: bool


CALLS_PER_STEP = 2


@create_step("bench-engine-connector-step")
async def connector_step(inp: ConnectorInput, ctx: StepContext) -> dict[str, Any]:
    """A connector-shaped step: create a thing, read it back (2 HTTP calls)."""
    system: HttpConnector = ctx.container.resolve("bench-loopback")
    call_ctx = ctx if inp.record else None
    made = await system.request("POST", "/v1/things", ctx=call_ctx, json={"n": inp.n},
                                operation="create_thing")
    thing = made.json()["id"]
    await system.request("GET", f"/v1/things/{thing}", ctx=call_ctx, operation="get_thing")
    return {"thing": thing}


connector_flow: WorkflowDefinition = create_workflow(
    "bench-engine-connector", lambda inp: WorkflowResponse(connector_step(inp)))


class Loopback:
    """A minimal keep-alive HTTP/1.1 server on 127.0.0.1 answering ``{"id": ...}``."""

    def __init__(self) -> None:
        self.server: asyncio.Server | None = None
        self.answered = 0

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                if length:
                    await reader.readexactly(length)
                self.answered += 1
                body = b'{"id":"thing_%d"}' % self.answered
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


# --- measuring ---------------------------------------------------------------------------------

SLOW_MS = 200  # the embedded server logs statements slower than this
STATS_FLUSH_S = 11.0  # an idle backend publishes its pg_stat_database counts within 10 s
METER_MARK = "pg_stat_"  # every query of the measuring connection reads a pg_stat_* view


def log(msg: str) -> None:
    print(f"[bench/engine] {msg}", file=sys.stderr, flush=True)


def pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile, rounded to 3 decimals."""
    s = sorted(values)
    k = max(0, min(len(s) - 1, round(p / 100 * len(s) + 0.5) - 1))
    return round(s[k], 3)


class Meter:
    """A separate connection reading pg_stat_statements / pg_stat_database.

    Its own queries all mention ``pg_stat_`` and are excluded from every count.
    """

    def __init__(self, conn: asyncpg.Connection, schema: str) -> None:
        self.conn = conn
        self.schema = schema
        self.statements_ok = False

    async def setup(self) -> None:
        try:
            await self.conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            await self.conn.fetchval("SELECT count(*) FROM pg_stat_statements")
            self.statements_ok = True
        except asyncpg.PostgresError as exc:  # not preloaded on a foreign server
            log(f"pg_stat_statements unavailable: {exc}")

    async def reset(self) -> None:
        if self.statements_ok:
            await self.conn.execute("SELECT pg_stat_statements_reset()")

    async def counters(self) -> tuple[int, int]:
        """(transactions committed in this database, next transaction id).

        ``xact_commit`` counts every transaction, read-only ones too, and a backend publishes
        it up to 10 s late when it goes idle; the next xid moves at once, by one for every
        transaction that wrote (and so had to flush the WAL at commit).
        """
        row = await self.conn.fetchrow(
            "SELECT xact_commit, pg_snapshot_xmax(pg_current_snapshot())::text::bigint AS xid "
            "FROM pg_stat_database WHERE datname = current_database()")
        assert row is not None
        return int(row["xact_commit"]), int(row["xid"])

    async def statements(self) -> list[tuple[str, int]]:
        """(query, calls) of everything but the meter's own queries, most called first."""
        if not self.statements_ok:
            return []
        rows = await self.conn.fetch(
            "SELECT query, sum(calls)::bigint AS calls FROM pg_stat_statements "
            "WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) "
            "AND query NOT LIKE $1 GROUP BY query ORDER BY 2 DESC",
            f"%{METER_MARK}%",
        )
        return [(r["query"], int(r["calls"])) for r in rows]


def _short(query: str) -> str:
    lines = [ln.strip() for ln in query.splitlines()
             if ln.strip() and not ln.strip().startswith("--")]
    return " ".join(lines)[:90]


def summarise(stmts: list[tuple[str, int]], schema: str, n: int) -> dict[str, Any]:
    hub_calls = sum(c for q, c in stmts if f"{schema}." in q)
    resets = sum(c for q, c in stmts if "pg_advisory_unlock_all" in q)
    total = sum(c for _, c in stmts)
    return {
        "hub_schema_statements": hub_calls,
        "pool_reset_round_trips": resets,
        "all_statements": total,
        "per_workflow": {
            "hub_schema_statements": round(hub_calls / n, 3),
            "pool_reset_round_trips": round(resets / n, 3),
            "all_statements": round(total / n, 3),
        },
        "top": [{"query": _short(q), "calls": c} for q, c in stmts[:12]],
    }


# --- phases ------------------------------------------------------------------------------------


class Tally:
    """Runs that did not succeed, or did not settle within ``timeout`` seconds."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.failed = 0
        self.timed_out = 0
        self.last_ok = 0.0  # perf_counter of the last successful result


async def run_one(hub: Hub, n: int, tally: Tally) -> float | None:
    t = time.perf_counter()
    try:
        run = await three_steps(hub).run(input={"n": n}, raise_on_error=False,
                                         timeout=tally.timeout)
    except TimeoutError:
        tally.timed_out += 1
        return None
    done = time.perf_counter()
    if not run.succeeded:
        tally.failed += 1
        log(f"run {run.id} ended {run.status}")
        return None
    tally.last_ok = done
    return done - t


async def sequential(hub: Hub, count: int, base: int, tally: Tally) -> list[float]:
    out = [await run_one(hub, base + i, tally) for i in range(count)]
    return [x for x in out if x is not None]


async def concurrent(hub: Hub, total: int, tasks: int, base: int,
                     tally: Tally) -> tuple[list[tuple[float, float]], float]:
    """(start offset s, latency s) of each successful run, and the start time."""
    lat: list[tuple[float, float]] = []
    next_n = 0
    t0 = time.perf_counter()

    async def worker() -> None:
        nonlocal next_n
        while next_n < total:
            i = next_n
            next_n += 1
            began = time.perf_counter() - t0
            x = await run_one(hub, base + i, tally)
            if x is not None:
                lat.append((began, x))

    await asyncio.gather(*(worker() for _ in range(tasks)))
    return lat, t0


async def fetch_one(conn: asyncpg.Connection, sql: str) -> asyncpg.Record:
    row = await conn.fetchrow(sql)
    if row is None:
        raise RuntimeError(f"no row: {sql}")
    return row


async def connector_phase(hub: Hub, conn: asyncpg.Connection, schema: str, total: int,
                          tasks: int, rounds: int = 4) -> dict[str, Any]:
    """The lineage's cost: the same connector workflow with its calls recorded and not."""
    loopback = Loopback()
    url = await loopback.start()
    settings = ConnectorSettings(base_url=AnyHttpUrl(url), rate_per_second=1e6,
                                 max_concurrency=tasks, max_connections=tasks, max_retries=0)
    system = HttpConnector("loopback", settings)
    hub.container.register("bench-loopback", system)
    lat: dict[bool, list[float]] = {True: [], False: []}
    wall: dict[bool, float] = {True: 0.0, False: 0.0}
    wal: dict[bool, int] = {True: 0, False: 0}
    failed = 0
    counter = iter(range(10**9))
    try:
        async def one(record: bool) -> None:
            nonlocal failed
            t = time.perf_counter()
            run = await connector_flow(hub).run(
                input={"n": next(counter), "record": record}, raise_on_error=False)
            if run.succeeded:
                lat[record].append(time.perf_counter() - t)
            else:
                failed += 1

        async def batch(record: bool, count: int) -> None:
            left = count

            async def worker() -> None:
                nonlocal left
                while left > 0:
                    left -= 1
                    await one(record)

            await asyncio.gather(*(worker() for _ in range(tasks)))

        await batch(True, tasks * 2)  # warm-up: connections, plans
        await batch(False, tasks * 2)
        lat = {True: [], False: []}
        per_round = max(1, total // rounds)
        # ABBA rounds (on, off, off, on, ...): a drift of the machine's load hits both sides
        for record in [True, False, False, True] * max(1, rounds // 2):
            lsn0 = await conn.fetchval("SELECT pg_current_wal_lsn()")
            t0 = time.perf_counter()
            await batch(record, per_round)
            wall[record] += time.perf_counter() - t0
            wal[record] += int(await conn.fetchval(
                "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::pg_lsn)", lsn0))
        rows = await conn.fetchval(f"SELECT count(*) FROM {schema}.connector_call")
        size = await conn.fetchval(
            f"SELECT pg_total_relation_size('{schema}.connector_call')")
    finally:
        await system.aclose()
        await loopback.stop()

    def side(record: bool) -> dict[str, Any]:
        ms = [x * 1000 for x in lat[record]]
        n = len(ms)
        return {"workflows": n, "mean_ms": round(statistics.fmean(ms), 3) if ms else None,
                "p50_ms": pct(ms, 50) if ms else None, "p99_ms": pct(ms, 99) if ms else None,
                "workflows_per_s": round(n / wall[record], 1) if wall[record] else None,
                "wal_bytes_per_workflow": round(wal[record] / n, 1) if n else None}

    on, off = side(True), side(False)
    out: dict[str, Any] = {"calls_per_workflow": CALLS_PER_STEP, "concurrency": tasks,
                           "failed": failed, "recorded": on, "unrecorded": off,
                           "connector_call_rows": rows,
                           "table_bytes_per_recorded_call": round(size / rows, 1) if rows
                           else None}
    if on["mean_ms"] is not None and off["mean_ms"] is not None:
        out["ms_per_recorded_call"] = round(
            (on["mean_ms"] - off["mean_ms"]) / CALLS_PER_STEP, 3)
        out["throughput_cost_pct"] = round(
            100 * (1 - on["workflows_per_s"] / off["workflows_per_s"]), 1)
        out["wal_bytes_per_recorded_call"] = round(
            (on["wal_bytes_per_workflow"] - off["wal_bytes_per_workflow"]) / CALLS_PER_STEP, 1)
    return out


def batcher_stats(hub: Hub) -> dict[str, int]:
    ex = hub.executor
    out: dict[str, int] = {}
    if ex is not None:
        out["checkpoint_flushes"] = ex.checkpoints.flushes
        out["checkpoint_rows"] = ex.checkpoints.rows
    starts = getattr(hub, "_starts", None)
    if starts is not None:
        out["start_flushes"] = starts.flushes
        out["start_rows"] = starts.rows
    return out


class ServerCpu:
    """CPU seconds used by the embedded server's processes (postmaster and its children)."""

    def __init__(self, data_dir: Path | None) -> None:
        self.root: psutil.Process | None = None
        if data_dir is not None:
            with contextlib.suppress(OSError, ValueError, psutil.Error):
                pid = int((data_dir / "postmaster.pid").read_text().split()[0])
                self.root = psutil.Process(pid)

    def seconds(self) -> float | None:
        if self.root is None:
            return None
        total = 0.0
        for proc in [self.root, *self.root.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                t = proc.cpu_times()
                total += t.user + t.system
        return total


async def bench(dsn: str, args: argparse.Namespace,
                data_dir: Path | None = None) -> dict[str, Any]:
    schema = args.schema or f"bench_{uuid.uuid4().hex[:8]}"
    result: dict[str, Any] = {
        "bench": "engine", "cpus": os.cpu_count(), "python": platform.python_version(),
        "n": args.workflows, "concurrency": args.concurrency, "pool_max": args.pool_max,
        "schema": schema,
    }
    meter_conn = await asyncpg.connect(dsn)
    try:
        meter = Meter(meter_conn, schema)
        await meter.setup()
        result["pg_version"] = await meter_conn.fetchval("SHOW server_version")
        result["pg_settings"] = {
            k: await meter_conn.fetchval(f"SHOW {k}")
            for k in ("fsync", "synchronous_commit", "max_connections")
        }
        overrides: dict[str, Any] = {"pool_max": args.pool_max}
        if args.lease_seconds is not None:
            overrides["lease_seconds"] = args.lease_seconds
        tally = Tally(args.run_timeout)
        async with Hub(dsn, schema=schema, execute=True, **overrides) as hub:
            result["hub_settings"] = {
                "lease_seconds": hub.settings.lease_seconds,
                "poll_interval": hub.settings.poll_interval,
                "pool_min": hub.settings.pool_min,
                "max_executions": hub.settings.max_executions,
            }
            log(f"warm-up: {args.warmup} runs")
            await sequential(hub, args.warmup, 0, tally)

            log(f"sequential: {args.sequential} runs")
            seq = [x * 1000 for x in await sequential(hub, args.sequential, 1_000_000, tally)]
            result["sequential_not_ok"] = tally.failed + tally.timed_out
            result["sequential_p50_ms"] = pct(seq, 50)
            result["sequential_p99_ms"] = pct(seq, 99)
            result["sequential_mean_ms"] = round(statistics.fmean(seq), 3)

            log(f"concurrent: {args.workflows} runs, {args.concurrency} tasks")
            await asyncio.sleep(1.5)  # let stats of the earlier phases flush
            stmts_before = hub.store.statements
            batch_before = batcher_stats(hub)
            xact_before, xid_before = await meter.counters()
            await meter.reset()
            failed0, timed_out0 = tally.failed, tally.timed_out
            server_cpu = ServerCpu(data_dir)
            srv0, cpu0 = server_cpu.seconds(), time.process_time()
            lat, t0 = await concurrent(hub, args.workflows, args.concurrency, 2_000_000, tally)
            wall = time.perf_counter() - t0
            srv1, cpu1 = server_cpu.seconds(), time.process_time()
            result["client_cpu_ms_per_workflow"] = round((cpu1 - cpu0) * 1000 / args.workflows, 3)
            result["client_cpu_utilisation"] = round((cpu1 - cpu0) / wall, 3)
            if srv0 is not None and srv1 is not None:
                result["server_cpu_ms_per_workflow"] = round(
                    (srv1 - srv0) * 1000 / args.workflows, 3)
                result["server_cpu_utilisation"] = round((srv1 - srv0) / wall, 3)
            stmts_after = hub.store.statements
            batch_after = batcher_stats(hub)
            server = await meter.statements()
            _, xid_after = await meter.counters()
            log(f"waiting {STATS_FLUSH_S} s for idle backends to publish their commit counts")
            await asyncio.sleep(STATS_FLUSH_S)
            xact_after, _ = await meter.counters()
            n = args.workflows
            ms = [x * 1000 for _, x in lat]
            slow = sorted(lat, key=lambda r: -r[1])[:5]
            result["slowest_runs"] = [
                {"started_at_s": round(b, 3), "ms": round(x * 1000, 1)} for b, x in slow]
            result["runs_over_250ms"] = sum(1 for x in ms if x > 250)
            ok = len(lat)
            busy = (tally.last_ok - t0) if ok else wall
            # runs that stall (see failed/timed_out) would hold the wall clock hostage for
            # --run-timeout: the rate is successes over the time to the last success
            result["workflows_per_s"] = round(ok / busy, 1)
            result["wall_s"] = round(wall, 3)
            result["succeeded"] = ok
            result["failed"] = tally.failed - failed0
            result["timed_out"] = tally.timed_out - timed_out0
            result["p50_ms"] = pct(ms, 50)
            result["p95_ms"] = pct(ms, 95)
            result["p99_ms"] = pct(ms, 99)
            result["max_ms"] = round(max(ms), 3)
            if server:
                s = summarise(server, schema, n)
                result["round_trips_per_workflow"] = s["per_workflow"]["hub_schema_statements"]
                result["pool_reset_round_trips_per_workflow"] = (
                    s["per_workflow"]["pool_reset_round_trips"])
                result["round_trips_incl_pool_reset_per_workflow"] = round(
                    (s["hub_schema_statements"] + s["pool_reset_round_trips"]) / n, 3)
                result["server_statements_per_workflow"] = s["per_workflow"]["all_statements"]
                result["server_statements_top"] = s["top"]
            else:
                result["round_trips_per_workflow"] = None
            # the meter's own transactions in the window: the reads of the counters and of
            # pg_stat_statements, and the reset (the last read does not count itself)
            meter_xacts = 4 if meter.statements_ok else 2
            result["commits_per_workflow"] = round(
                (xact_after - xact_before - meter_xacts) / n, 3)
            result["write_commits_per_workflow"] = round((xid_after - xid_before) / n, 3)
            result["client_statements_per_workflow"] = round((stmts_after - stmts_before) / n, 3)
            delta = {k: batch_after[k] - batch_before.get(k, 0) for k in batch_after}
            if delta.get("checkpoint_flushes"):
                delta["checkpoint_rows_per_flush"] = round(  # type: ignore[assignment]
                    delta["checkpoint_rows"] / delta["checkpoint_flushes"], 2)
            if delta.get("start_flushes"):
                delta["start_rows_per_flush"] = round(  # type: ignore[assignment]
                    delta["start_rows"] / delta["start_flushes"], 2)
            result["batching"] = delta

            counts = await fetch_one(meter_conn,
                f"SELECT count(*) FILTER (WHERE parked IS NOT NULL) AS parked, "
                f"count(*) FILTER (WHERE finished_at IS NULL) AS unfinished "
                f"FROM {schema}.execution")
            result["parked_executions"] = counts["parked"]
            result["unfinished_executions"] = counts["unfinished"]
            if counts["parked"]:
                reasons = await meter_conn.fetch(
                    f"SELECT left(parked, 80) AS why, count(*) AS n FROM {schema}.execution "
                    "WHERE parked IS NOT NULL GROUP BY 1 ORDER BY 2 DESC LIMIT 3")
                result["parked_reasons"] = {r["why"]: r["n"] for r in reasons}

            if args.connector_workflows:
                log(f"connector: {args.connector_workflows} runs per side, recorded or not")
                result["connector"] = await connector_phase(
                    hub, meter_conn, schema, args.connector_workflows, args.concurrency)

            log(f"idle: {args.idle_seconds} s")
            await asyncio.sleep(1.0)
            idle_stmts_before = hub.store.statements
            await meter.reset()
            t0 = time.perf_counter()
            await asyncio.sleep(args.idle_seconds)
            idle = await meter.statements()
            span = time.perf_counter() - t0
            idle_client = hub.store.statements - idle_stmts_before
            if meter.statements_ok:
                calls = sum(c for _, c in idle)
                result["idle_statements_per_s"] = round(calls / span, 3)
                # the pool's reset is one message of 4 statements: count it once
                trips = sum(c for q, c in idle
                            if f"{schema}." in q or "pg_advisory_unlock_all" in q)
                result["idle_round_trips_per_s"] = round(trips / span, 3)
                result["idle_statements_top"] = [
                    {"query": _short(q), "calls": c} for q, c in idle[:8]]
            else:
                result["idle_statements_per_s"] = None
            result["idle_client_statements_per_s"] = round(idle_client / span, 3)
            result["idle_seconds"] = round(span, 2)
        with contextlib.suppress(asyncpg.PostgresError):
            await meter_conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    finally:
        await meter_conn.close()
    return result


def slow_statements(log_path: Path) -> dict[str, Any]:
    """Statements the server logged as slower than SLOW_MS (any phase), and the slowest."""
    durations: list[float] = []
    with contextlib.suppress(OSError):
        for line in log_path.read_text(errors="replace").splitlines():
            if "LOG:  duration:" in line:
                with contextlib.suppress(ValueError, IndexError):
                    durations.append(float(line.split("duration:")[1].split()[0]))
    return {"over_ms": SLOW_MS, "count": len(durations),
            "max_ms": round(max(durations), 1) if durations else None}


def remove_socket_dir(dsn: str) -> None:
    """The embedded server leaves its (empty) socket folder /tmp/hub-pg-<hash> behind."""
    host = parse_qs(urlsplit(dsn).query).get("host", [""])[0]
    if host.startswith("/tmp/hub-pg-"):
        with contextlib.suppress(OSError):
            os.rmdir(host)


@contextlib.contextmanager
def own_postgres(dsn: str | None, prefix: str) -> Iterator[str]:
    """``dsn`` as given, else an embedded Postgres of the bench's own in a temporary
    folder, stopped and removed at the end."""
    if dsn:
        yield dsn
        return
    tmp = tempfile.mkdtemp(prefix=prefix, dir="/tmp")
    os.chmod(tmp, 0o755)
    server = EmbeddedPostgres(Path(tmp) / "pgdata")
    log(f"starting embedded Postgres in {tmp}")
    started = ""
    try:
        started = server.start()
        yield started
    finally:
        server.stop()
        if started:
            remove_socket_dir(started)
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--workflows", type=int, default=3000, help="N runs in the concurrent phase")
    ap.add_argument("--concurrency", type=int, default=50, help="C asyncio tasks")
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--sequential", type=int, default=300)
    ap.add_argument("--idle-seconds", type=float, default=20.0)
    ap.add_argument("--connector-workflows", type=int, default=1000,
                    help="runs per side (calls recorded, not) of the connector phase; 0: skip")
    ap.add_argument("--pool-max", type=int, default=20)
    ap.add_argument("--lease-seconds", type=float, default=None,
                    help="hub lease (default: the hub's, 15 s); the heartbeat runs every lease/3")
    ap.add_argument("--run-timeout", type=float, default=30.0,
                    help="a run not settled after this many seconds counts as timed_out")
    ap.add_argument("--schema", default=None, help="default: a fresh bench_<hex> schema")
    ap.add_argument("--database-url", default=None, help="default: own embedded Postgres")
    ap.add_argument("--log-level", default="warning")
    args = ap.parse_args()
    configure_logging(args.log_level)
    # SIGTERM unwinds like Ctrl-C, so the embedded server is stopped and its folder removed
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    tmp: str | None = None
    dsn = ""
    server: EmbeddedPostgres | None = None
    try:
        if args.database_url:
            dsn = args.database_url
        else:
            tmp = tempfile.mkdtemp(prefix="bench_engine_", dir="/tmp")
            os.chmod(tmp, 0o755)
            # the only change to the server defaults: log statements slower than SLOW_MS
            server = EmbeddedPostgres(Path(tmp) / "pgdata",
                                      settings={"log_min_duration_statement": str(SLOW_MS)})
            log(f"starting embedded Postgres in {tmp}")
            dsn = server.start()
        result = asyncio.run(bench(dsn, args, Path(tmp) / "pgdata" if tmp else None))
        if tmp is not None:
            result["server_slow_statements"] = slow_statements(
                Path(tmp) / "pgdata" / "hub-postgres.log")
    finally:
        if server is not None:
            server.stop()
            remove_socket_dir(dsn)
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
