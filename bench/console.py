"""The console's reads on a big table: the execution list with each filter, and the overview chart.

Starts its own embedded PostgreSQL in a fresh temporary folder (unless ``--database-url``),
migrates a fresh schema, and loads ``--rows`` executions (1,000,000 by default) with COPY:
six workflows, realistic statuses (93% succeeded, a few percent compensated or waiting, 0.1%
compensation_failed), triggers from events (with keys), schedules and the API, spread over
30 days. Every index of the migrations is in place during the load, as in production; then
ANALYZE.

Each list query goes through ``HubService.executions`` (what the console and ``GET
/executions`` call), ``--repeat`` times, reporting p50 and max in ms and the rows returned:
first pages with each filter alone and a few combined, and the 20th page of the unfiltered
list (following the cursors). The overview chart (``HubService.status_chart``, its cache
bypassed) is timed for its three windows. ``generic_plan_ms`` times a few of the pages on
the statement's generic plan (``($1 IS NULL OR workflow = $1)`` can use no index there),
which Postgres may switch a prepared statement to after five runs: the store plans the list
per call instead.

    python bench/console.py [--rows 1000000] [--repeat 15] [--database-url DSN]

Prints one JSON line (progress goes to stderr).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from hub import Hub
from hub.api.service import HubService
from hub.logging import configure_logging
from hub.store import queries as q
from hub.store.embedded import EmbeddedPostgres

WORKFLOWS = [  # name, share, trigger kind, topic
    ("fulfil-order", 0.55, "event", "order.placed"),
    ("sync-product", 0.20, "event", "product.updated"),
    ("welcome-customer", 0.10, "event", "customer.created"),
    ("refund-order", 0.08, "mixed", "refund.requested"),
    ("stock-reconcile", 0.05, "schedule", ""),
    ("nightly-export", 0.02, "schedule", ""),
]
STATUSES = [("succeeded", 0.93), ("compensated", 0.04), ("waiting", 0.015),
            ("cancelled", 0.005), ("running", 0.005), ("pending", 0.004),
            ("compensation_failed", 0.001)]
COLUMNS = ["id", "workflow", "version", "transaction_id", "status", "phase", "input", "steps",
           "result", "error", "trigger", "created_at", "updated_at", "finished_at",
           "retain_until"]
DAYS = 30


def log(msg: str) -> None:
    print(f"[bench/console] {msg}", file=sys.stderr, flush=True)


def _pick(rnd: random.Random, table: list[tuple[Any, float]]) -> Any:
    x = rnd.random()
    for value, share in table:
        x -= share
        if x <= 0:
            return value
    return table[-1][0]


def _text(value: str | None) -> str:
    """A field of COPY's text format."""
    if value is None:
        return "\\N"
    return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")


async def rows(n: int, now: datetime, seed: int = 7) -> AsyncIterator[bytes]:
    """``n`` executions as COPY text, in chunks; ids are time-ordered like the hub's."""
    rnd = random.Random(seed)
    wf_table = [(w, w[1]) for w in WORKFLOWS]
    span = DAYS * 86400.0
    chunk: list[str] = []
    for i in range(n):
        wf, _, kind, topic = _pick(rnd, wf_table)
        status = _pick(rnd, STATUSES)
        created = now - timedelta(seconds=span * (1 - i / n) + rnd.random())
        if kind == "mixed":
            kind = "api" if rnd.random() < 0.4 else "event"
        key = f"{topic.split('.')[0]}-{i}"
        if kind == "event":
            trigger = {"kind": "event", "topic": topic, "partition": i % 8, "offset": i // 8,
                       "key": key, "event_id": f"ev-{i}", "subscriber": f"on_{wf}",
                       "timestamp": int(created.timestamp() * 1000)}
            tx = f"{topic}:{key}"
        elif kind == "api":
            trigger = {"kind": "api", "route": "POST /workflows/{name}/runs",
                       "api_key": {"id": "k1", "name": "shop", "prefix": "hub_0123"}}
            tx = f"api:{uuid.UUID(int=rnd.getrandbits(128))}"
        else:
            tick = created.replace(second=0, microsecond=0)
            trigger = {"kind": "schedule", "job": wf, "tick": tick.isoformat()}
            tx = f"{wf}:{tick.isoformat()}:{i}"
        finished = status in ("succeeded", "compensated", "cancelled", "compensation_failed")
        phase = {"compensated": "compensating", "compensation_failed": "compensating",
                 "cancelled": "cancelling"}.get(status, "forward")
        steps = {"a": {"state": "done", "attempts": 1, "seq": 1,
                       "started_at": created.timestamp(), "finished_at": created.timestamp(),
                       "output": {"ok": True}}}
        error = ({"step": "b", "message": "refused", "type": "StepFailure", "attempt": 1}
                 if status in ("compensated", "compensation_failed", "cancelled") else None)
        ms = int(created.timestamp() * 1000)
        ident = uuid.UUID(int=(ms << 80) | (0x7 << 76) | rnd.getrandbits(76) & ((1 << 76) - 1))
        end = created + timedelta(seconds=0.05) if finished else None
        fields = [
            str(ident), wf, "v1", tx, status, phase,
            json.dumps({"id": key, "amount": i % 5000}), json.dumps(steps),
            json.dumps({"done": True}) if status == "succeeded" else None,
            json.dumps(error) if error else None, json.dumps(trigger), created.isoformat(),
            (end or created).isoformat(), end.isoformat() if end else None,
            (end + timedelta(days=60)).isoformat() if end else None,
        ]
        chunk.append("\t".join(_text(f) for f in fields))
        if len(chunk) >= 20_000:
            yield ("\n".join(chunk) + "\n").encode()
            chunk = []
    if chunk:
        yield ("\n".join(chunk) + "\n").encode()


async def timed(fn: Callable[[], Awaitable[Any]], repeat: int) -> tuple[dict[str, Any], Any]:
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = await fn()
        times.append((time.perf_counter() - t0) * 1000)
    return {"p50_ms": round(statistics.median(times), 2), "max_ms": round(max(times), 2)}, out


async def bench(dsn: str, args: argparse.Namespace) -> dict[str, Any]:
    schema = args.schema or f"bench_console_{uuid.uuid4().hex[:6]}"
    result: dict[str, Any] = {"rows": args.rows, "schema": schema, "repeat": args.repeat}
    async with Hub(dsn, schema=schema, execute=False, pool_max=4) as hub:
        service = HubService(hub)
        now = datetime.now(UTC)
        log(f"loading {args.rows} executions with COPY into {schema}.execution")
        t0 = time.perf_counter()
        async with hub.store.pool.acquire() as conn:
            await conn.copy_to_table("execution", schema_name=schema, columns=COLUMNS,
                                     source=rows(args.rows, now), format="text",
                                     timeout=3600)
            copy_s = time.perf_counter() - t0
            log(f"loaded in {copy_s:.1f} s; ANALYZE")
            await conn.execute(f"ANALYZE {schema}.execution")
            size = await conn.fetchval(
                "SELECT pg_total_relation_size($1::regclass)", f"{schema}.execution")
        result.update(copy_s=round(copy_s, 1), copy_rows_per_s=round(args.rows / copy_s),
                      table_and_indexes_mb=round(size / 2**20))

        sample = await hub.store.api_list_executions(limit=1, trigger_kind="event",
                                                     created_before=now - timedelta(days=12))
        tx, key = sample[0]["transaction_id"], sample[0]["trigger"]["key"]
        hour = (now - timedelta(days=12)).replace(minute=0, second=0, microsecond=0)
        cases: dict[str, dict[str, Any]] = {
            "none": {},
            "workflow_common": {"workflow": "fulfil-order"},
            "workflow_rare": {"workflow": "nightly-export"},
            "status_rare": {"status": "compensation_failed"},
            "status_waiting": {"status": "waiting"},
            "workflow_and_status": {"workflow": "sync-product", "status": "compensated"},
            "time_window_1h": {"created_after": hour, "created_before": hour + timedelta(hours=1)},
            "time_window_and_workflow": {"workflow": "refund-order", "created_after": hour,
                                         "created_before": hour + timedelta(hours=1)},
            "trigger_api": {"trigger_kind": "api"},
            "trigger_schedule_and_status": {"trigger_kind": "schedule", "status": "compensated"},
            "transaction_id": {"transaction_id": tx},
            "key_exact": {"key": key},
            "key_prefix_broad": {"key": "order-9"},
            "empty_combination": {"workflow": "fulfil-order", "status": "compensated",
                                  "trigger_kind": "api"},
        }
        queries: dict[str, Any] = {}
        for name, filters in cases.items():
            stats, page = await timed(lambda f=filters: service.executions(**f, limit=50),
                                      args.repeat)
            queries[name] = {**stats, "rows": len(page.items)}
            log(f"{name:28} p50 {stats['p50_ms']:8.2f} ms  max {stats['max_ms']:8.2f} ms  "
                f"rows {len(page.items)}")

        cursor = None
        for _ in range(19):
            cursor = (await service.executions(cursor=cursor, limit=50)).next
        stats, page = await timed(lambda: service.executions(cursor=cursor, limit=50),
                                  args.repeat)
        queries["page_20_unfiltered"] = {**stats, "rows": len(page.items)}
        result["queries"] = queries

        chart: dict[str, Any] = {}
        for label, window, bars in [("1h", timedelta(hours=1), 12),
                                    ("24h", timedelta(hours=24), 24),
                                    ("7d", timedelta(days=7), 28)]:
            bucket_s = int(window.total_seconds()) // bars
            stats, c = await timed(lambda s=bucket_s, b=bars: service._status_chart(s, b),
                                   max(3, args.repeat // 3))
            chart[label] = {**stats, "executions": sum(sum(s.per_bucket) for s in c.series)}
            log(f"chart {label:5} p50 {stats['p50_ms']:8.2f} ms  "
                f"executions {chart[label]['executions']}")
        result["status_chart"] = chart

        # what the store rules out: the list on a generic plan, which Postgres may choose for
        # a prepared statement after five runs, by estimated cost
        sql = q.API_LIST_EXECUTIONS.replace("{s}", schema)
        generic: dict[str, float] = {}
        async with hub.store.pool.acquire() as conn, conn.transaction():
            await conn.execute("SET LOCAL plan_cache_mode = force_generic_plan")
            stmt = await conn.prepare(sql)
            for name in ("none", "status_rare", "transaction_id", "key_exact"):
                f = cases[name]
                t0 = time.perf_counter()
                await stmt.fetch(None, f.get("status"), None, None, None, None, None, 51,
                                 f.get("transaction_id"),
                                 f"{f['key']}%" if "key" in f else None)
                generic[name] = round((time.perf_counter() - t0) * 1000, 1)
        result["generic_plan_ms"] = generic
        log(f"the same on a generic plan (ms): {generic}")
        with contextlib.suppress(Exception):
            async with hub.store.pool.acquire() as conn:
                await conn.execute(f"DROP SCHEMA {schema} CASCADE")
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--schema", default=None)
    ap.add_argument("--database-url", default=None, help="default: own embedded Postgres")
    args = ap.parse_args()
    configure_logging("warning")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    tmp: str | None = None
    server: EmbeddedPostgres | None = None
    dsn = ""
    try:
        if args.database_url:
            dsn = args.database_url
        else:
            tmp = tempfile.mkdtemp(prefix="bench_console_", dir="/tmp")
            os.chmod(tmp, 0o755)
            server = EmbeddedPostgres(Path(tmp) / "pgdata")
            log(f"starting embedded Postgres in {tmp}")
            dsn = server.start()
        result = asyncio.run(bench(dsn, args))
    finally:
        if server is not None:
            server.stop()
            host = parse_qs(urlsplit(dsn).query).get("host", [""])[0]
            if host.startswith("/tmp/hub-pg-"):
                with contextlib.suppress(OSError):
                    os.rmdir(host)
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
