"""Cost per fan-out item transition of ``map_each``, for 10, 100 and 1,000 items.

Starts its own embedded PostgreSQL (server defaults) in a fresh temporary folder unless
``--database-url`` is given, opens a ``Hub`` (executor in-process) and runs, one at a time,
a workflow of one map step over N items (``--sizes``), each item a trivial step returning a
small dict, ``--concurrency`` items at once. Each size runs ``--items-per-size`` items in all
(so ``--items-per-size / N`` runs; at least one), after a warm-up run. Per size:

  ``item_transitions``        2 per item (started, done): the rows the map writes;
  ``us_per_item_transition``  wall time of the runs / item transitions;
  ``wal_bytes_per_item_transition``  pg_current_wal_lsn() difference over the runs /
                              item transitions (every byte the server wrote for them:
                              item rows, the execution's checkpoints, the result);
  ``write_commits_per_item_transition``  transaction ids used / item transitions.

``growth`` is each figure at the largest size over the same at the smallest: the design
bound is 2x (no document that grows with the list is rewritten per item transition).
Logs go to stderr; prints one JSON line at the end.

    python bench/fanout.py [--sizes 10,100,1000] [--items-per-size 2000] [--concurrency 10]
                           [--database-url DSN]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.engine import own_postgres  # noqa: E402
from hub import Hub, WorkflowDefinition, create_step, create_workflow, map_each  # noqa: E402
from hub.logging import configure_logging  # noqa: E402


def log(msg: str) -> None:
    print(f"[bench/fanout] {msg}", file=sys.stderr, flush=True)


@create_step("bench-item")
async def bench_item(item: dict[str, Any]) -> dict[str, Any]:
    return {"n": item["n"], "ok": True}


def workflow(concurrency: int) -> WorkflowDefinition:
    definition: WorkflowDefinition = create_workflow(
        f"bench-fanout-{concurrency}",
        lambda inp: map_each(inp["items"], bench_item, max_concurrency=concurrency))
    return definition


async def measure(hub: Hub, conn: asyncpg.Connection, wf: WorkflowDefinition, size: int,
                  total: int) -> dict[str, Any]:
    runs = max(1, total // size)
    items = [{"n": i} for i in range(size)]
    await wf(hub).run(input={"items": items})  # warm-up
    lsn0 = await conn.fetchval("SELECT pg_current_wal_lsn()")
    xid0 = int(await conn.fetchval("SELECT txid_current()"))
    t0 = time.perf_counter()
    for _ in range(runs):
        run = await wf(hub).run(input={"items": items})
        assert run.status == "succeeded", run.error
    elapsed = time.perf_counter() - t0
    wal = float(await conn.fetchval(
        "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::pg_lsn)", lsn0))
    xids = int(await conn.fetchval("SELECT txid_current()")) - xid0 - 1  # minus our own
    transitions = 2 * size * runs
    return {"items": size, "runs": runs, "item_transitions": transitions,
            "us_per_item_transition": round(elapsed / transitions * 1e6, 1),
            "wal_bytes_per_item_transition": round(wal / transitions, 1),
            "write_commits_per_item_transition": round(xids / transitions, 3)}


async def bench(dsn: str, args: argparse.Namespace) -> dict[str, Any]:
    sizes = [int(s) for s in args.sizes.split(",")]
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    wf = workflow(args.concurrency)
    conn = await asyncpg.connect(dsn)
    try:
        async with Hub(dsn, schema=schema, max_fanout_items=max(sizes)) as hub:
            per_size = []
            for size in sizes:
                log(f"{size} items x {max(1, args.items_per_size // size)} runs")
                per_size.append(await measure(hub, conn, wf, size, args.items_per_size))
        await conn.execute(f"DROP SCHEMA {schema} CASCADE")
    finally:
        await conn.close()
    first, last = per_size[0], per_size[-1]
    figures = ("us_per_item_transition", "wal_bytes_per_item_transition",
               "write_commits_per_item_transition")
    growth = {f: round(last[f] / first[f], 3) if first[f] else None for f in figures}
    return {"bench": "fanout", "concurrency": args.concurrency, "sizes": per_size,
            "growth": growth, "bound": 2.0,
            "within_bound": all(g is not None and g <= 2.0 for g in growth.values())}


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--sizes", default="10,100,1000")
    ap.add_argument("--items-per-size", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=10, help="items at once per map")
    ap.add_argument("--database-url", default=None, help="default: own embedded Postgres")
    ap.add_argument("--log-level", default="warning")
    args = ap.parse_args()
    configure_logging(args.log_level)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with own_postgres(args.database_url, "bench_fanout_") as dsn:
        result = asyncio.run(bench(dsn, args))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
