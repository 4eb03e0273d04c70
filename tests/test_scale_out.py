"""Several ``hub worker`` processes on one database and one broker share the work safely.

Three real worker processes each time (executor, scheduler, consumer, outbox relay), the
session's Postgres and broker, a schema and topics of the test's own:

* executions: no step of an execution is ever invoked twice at the same time, and every
  execution completes once, while partitions and executions move between workers (one of
  them stops half-way);
* a worker told to stop: the steps it cut end before another worker runs them again, and the
  runs it held go to the others at once, not after their lease;
* schedules: no tick fires twice, with every scheduler racing for the same late ticks;
* outbox: no row is published twice, with every relay woken by every emitted event.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer

from hub import Hub
from hub import wire as h
from hub.runtime.admin import reconcile
from hub.runtime.topics import load_topics
from hub.settings import KafkaSettings
from tests.conftest import broker_session_ms, worker_env
from tests.support.workers import workers
from tests.test_subscribers import produce
from tests.workflows import scale_flows  # noqa: F401  (the starters need the workflow)
from tests.workflows.scale_common import (
    DONE_TOPIC,
    INVOCATIONS_DDL,
    JOBS,
    TICK_RUNS_DDL,
    TICK_WORKFLOW,
    TOPIC,
    WORKFLOW,
)

pytestmark = pytest.mark.slow

FLOWS = "tests.workflows.scale_flows"
SUBS = "tests.workflows.scale_subs"
TICKS = "tests.workflows.scale_ticks"


# -- worker processes ------------------------------------------------------------------------


def topics_file(tmp_path: Path) -> Path:
    path = tmp_path / "topics.yaml"
    path.write_text(f"""
topics:
  {TOPIC}:
    partitions: 8
    event: tests.workflows.scale_flows:Job
    dead_letter: {TOPIC}.dlq
  {TOPIC}.dlq:
    partitions: 1
  {DONE_TOPIC}:
    partitions: 4
""")
    return path


async def kafka_env(kafka_bootstrap: str, prefix: str, tmp_path: Path
                    ) -> dict[str, str]:
    """The workers' Kafka settings, on topics (created here) and a group of the test's own."""
    path = topics_file(tmp_path)
    await reconcile(load_topics(path, f"{prefix}."), KafkaSettings(bootstrap=kafka_bootstrap),
                    kafka_bootstrap, create=True)
    return {
        "HUB_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "HUB_KAFKA_GROUP": f"{prefix}-hub",
        "HUB_KAFKA_TOPICS_FILE": str(path),
        "HUB_KAFKA_TOPIC_PREFIX": f"{prefix}.",
        "HUB_KAFKA_SUBSCRIBERS": SUBS,
        "HUB_KAFKA_SESSION_TIMEOUT_MS": str(broker_session_ms()),
    }


async def wait_for(conn: asyncpg.Connection, sql: str, target: int, timeout: float,
                   what: str) -> None:
    deadline = time.monotonic() + timeout
    while (value := int(await conn.fetchval(sql))) < target:
        assert time.monotonic() < deadline, f"{what}: {value} of {target} after {timeout}s"
        await asyncio.sleep(0.1)


async def executions(conn: asyncpg.Connection, schema: str) -> list[asyncpg.Record]:
    return await conn.fetch(
        f"SELECT id::text AS id, transaction_id, status, finished_at, archived "
        f"FROM {schema}.execution WHERE workflow = $1", WORKFLOW)


async def invocations(conn: asyncpg.Connection, schema: str, exited: dict[int, float]
                      ) -> dict[tuple[str, str], list[tuple[float, float, int, str]]]:
    """(execution, step) -> its invocations as (start, end, pid, outcome), by start. One
    whose end was never written ends when its process was seen gone."""
    out: dict[tuple[str, str], list[tuple[float, float, int, str]]] = defaultdict(list)
    for r in await conn.fetch(f"SELECT * FROM {schema}.scale_invocation ORDER BY started"):
        end = r["ended"] if r["ended"] is not None else exited.get(r["pid"], float("inf"))
        out[(r["execution_id"], r["step"])].append(
            (r["started"], end, r["pid"], r["outcome"] or "unfinished"))
    return out


def overlaps(spans: dict[tuple[str, str], list[tuple[float, float, int, str]]]
             ) -> list[tuple[tuple[str, str], Any, Any]]:
    """Pairs of invocations of one (execution, step) that ran at the same time."""
    found = []
    for key, runs in spans.items():
        latest = runs[0]  # of the invocations started before, the one that ended last
        for run in runs[1:]:
            if run[0] < latest[1]:
                found.append((key, latest, run))
            latest = max(latest, run, key=lambda r: r[1])
    return found


# -- executions --------------------------------------------------------------------------------


@pytest.mark.broker
async def test_three_workers_never_run_a_step_twice_at_once_and_finish_each_run_once(
        dsn: str, schema: str, kafka_bootstrap: str, prefix: str, tmp_path: Path) -> None:
    kafka = await kafka_env(kafka_bootstrap, prefix, tmp_path)

    def env(name: str) -> dict[str, str]:
        # a retry releases the run (no hold timer): any worker may claim it back
        return worker_env(dsn, schema, FLOWS, HUB_WORKER_ID=name, HUB_LEASE_SECONDS="2",
                          HUB_POLL_INTERVAL="0.2", HUB_HOLD_TIMER_SECONDS="0", **kafka)

    n_events, n_direct = 300, 150
    conn = await asyncpg.connect(dsn)
    try:
        # (the retries the test asks for are logged as warnings)
        async with Hub(dsn, schema=schema, execute=False) as starter, \
                workers(env, log_level="error") as ws:
            await conn.execute(INVOCATIONS_DDL.format(schema=schema))
            for name in ("w1", "w2", "w3"):
                await ws.start(name)
            jobs = [{"id": f"e{i}", "sleep": 0.02, "fail_first": i % 3 == 0}
                    for i in range(n_events)]
            await produce(kafka_bootstrap, f"{prefix}.{TOPIC}",
                          [(j["id"], json.dumps(j).encode(), []) for j in jobs])
            for i in range(n_direct):
                await starter.start(WORKFLOW, {"id": f"d{i}", "sleep": 0.02,
                                               "fail_first": i % 3 == 0},
                                    transaction_id=f"scale:d{i}", wait=False)
            done = f"SELECT count(*) FROM {schema}.execution WHERE finished_at IS NOT NULL"
            await wait_for(conn, done, (n_events + n_direct) // 3, 120, "runs finished")
            # w1 leaves half-way: its partitions and the runs it holds go to the others
            assert await ws.stop("w1") == 0
            await wait_for(conn, done, n_events + n_direct, 120, "runs finished")
            await ws.stop_all()
            pids = ws.pids()
            spans = await invocations(conn, schema, ws.exited)
        runs = await executions(conn, schema)
    finally:
        await conn.close()

    assert len(runs) == n_events + n_direct
    assert len({r["transaction_id"] for r in runs}) == len(runs), "one execution per event"
    assert Counter(r["status"] for r in runs) == {"succeeded": len(runs)}
    assert not overlaps(spans), "a step of one execution ran twice at the same time"
    oks = {key: [r for r in rs if r[3] == "ok"] for key, rs in spans.items()}
    assert len(oks) == 3 * len(runs) and all(oks.values()), "every step of every run succeeded"
    # a step whose code finished but whose task w1 cancelled while it was returning (its
    # outcome never checkpointed) runs again; nothing else may have run a step twice
    w1_pid = next(p for p, n in pids.items() if n == "w1")
    again = [rs for rs in oks.values() if len(rs) > 1]
    assert all(r[2] == w1_pid and r[1] <= ws.exited[w1_pid] for rs in again for r in rs[:-1]), (
        "a step ran to the end twice without its worker being stopped")
    # the test proves something only if the work was shared and moved between workers
    workers_of_run: dict[str, set[str]] = defaultdict(set)
    for (ex, _), rs in spans.items():
        workers_of_run[ex].update(pids[r[2]] for r in rs)
    assert set().union(*workers_of_run.values()) == {"w1", "w2", "w3"}
    assert any(len(names) > 1 for names in workers_of_run.values()), "no run changed hands"


async def stop_mid_step(dsn: str, schema: str, *, lease: float, cleanup: float
                        ) -> tuple[dict[tuple[str, str], list[Any]], float, int]:
    """w1 runs every run's first step; w2 and w3 are up; w1 is told to stop (SIGTERM).

    Returns the invocations, when w1's process was gone, and its pid. The first step takes
    10 s (longer than starting two workers on a busy machine) and, cancelled, ``cleanup``
    seconds to stop."""
    def env(name: str) -> dict[str, str]:
        return worker_env(dsn, schema, FLOWS, HUB_WORKER_ID=name,
                          HUB_LEASE_SECONDS=str(lease), HUB_POLL_INTERVAL="0.1")

    n = 20
    conn = await asyncpg.connect(dsn)
    try:
        async with Hub(dsn, schema=schema, execute=False) as starter, workers(env) as ws:
            await conn.execute(INVOCATIONS_DDL.format(schema=schema))
            w1 = await ws.start("w1")
            for i in range(n):
                await starter.start(WORKFLOW, {"id": f"c{i}", "sleep": 0.0, "first_sleep": 10.0,
                                               "cleanup": cleanup},
                                    transaction_id=f"scale:c{i}", wait=False)
            await wait_for(conn, f"SELECT count(*) FROM {schema}.scale_invocation", n, 30,
                           "first steps started by w1")
            await asyncio.gather(ws.start("w2"), ws.start("w3"))
            assert await ws.stop("w1") == 0
            await wait_for(conn, f"SELECT count(*) FROM {schema}.execution "
                                 "WHERE status = 'succeeded'", n, 60, "runs succeeded")
            await ws.stop_all()
            spans = await invocations(conn, schema, ws.exited)
    finally:
        await conn.close()
    cut = [r for rs in spans.values() for r in rs if r[2] == w1.pid and r[3] != "ok"]
    assert len(cut) == n, "w1 was stopped while it ran every run's first step"
    return spans, ws.exited[w1.pid], w1.pid


async def test_a_stopping_worker_lets_its_cut_steps_end_before_another_takes_them_over(
        dsn: str, schema: str) -> None:
    """A step may need a moment to stop once cancelled (cleanup in a ``finally``, a call it
    waits out): the run must not be started again elsewhere until it has."""
    spans, _, _ = await stop_mid_step(dsn, schema, lease=10.0, cleanup=0.5)
    found = overlaps(spans)
    assert not found, (
        f"{len(found)} step(s) started on another worker before the cancelled invocation "
        f"ended, e.g. {found[0]}")


async def test_a_stopping_worker_hands_its_runs_over_before_their_lease_expires(
        dsn: str, schema: str) -> None:
    lease = 10.0
    spans, exited, pid = await stop_mid_step(dsn, schema, lease=lease, cleanup=0.0)
    taken_over = min(r[0] for rs in spans.values() for r in rs if r[2] != pid)
    assert taken_over - exited < lease / 3, (
        f"the runs were taken over {taken_over - exited:.1f}s after w1 exited (lease {lease}s)")


# -- schedules ---------------------------------------------------------------------------------


async def test_three_schedulers_racing_for_late_ticks_fire_each_tick_once(
        dsn: str, schema: str) -> None:
    """Cron's grain is the minute, so instead of waiting for ticks the test sets the jobs'
    next tick back in time, as after a downtime of every scheduler; the three workers' next
    passes then race for the same late ticks (``misfire="all"``: each fires once, late).
    Every round goes further back than the one before, so it adds new ticks and offers the
    old ones again."""
    def env(name: str) -> dict[str, str]:
        return worker_env(dsn, schema, TICKS, HUB_WORKER_ID=name, HUB_LEASE_SECONDS="2",
                          HUB_POLL_INTERVAL="0.1")

    rounds, span_min = 6, 15
    conn = await asyncpg.connect(dsn)
    try:
        async with Hub(dsn, schema=schema, execute=False), \
                workers(env, log_level="info", logs=True) as ws:
            await conn.execute(TICK_RUNS_DDL.format(schema=schema))
            for name in ("w1", "w2", "w3"):
                await ws.start(name)
            jobs = list(JOBS)
            for r in range(1, rounds + 1):
                await conn.execute(
                    f"UPDATE {schema}.schedule SET next_tick = date_trunc('minute', now()) "
                    f"- make_interval(mins => $2) WHERE job = ANY($1::text[])",
                    jobs, r * span_min)
                await wait_for(conn, f"SELECT count(*) FROM {schema}.schedule "
                                     "WHERE next_tick > now()", len(jobs), 30,
                               f"round {r}: jobs caught up")
            ticks = f"{schema}.schedule_tick"
            total = int(await conn.fetchval(f"SELECT count(*) FROM {ticks}"))
            await wait_for(conn, f"SELECT count(*) FROM {ticks} WHERE execution_id IS NOT NULL",
                           total, 30, "ticks started")
            await wait_for(conn, f"SELECT count(*) FROM {schema}.scale_tick_run", total, 30,
                           "tick runs recorded")
            await asyncio.sleep(1.0)  # let a second fire, if any, show
            await ws.stop_all()
            fired = ws.events("schedule_tick_fired")
            runs = await conn.fetch(f"SELECT transaction_id FROM {schema}.execution "
                                    "WHERE workflow = $1", TICK_WORKFLOW)
            recorded = await conn.fetch(f"SELECT job, tick FROM {schema}.scale_tick_run")
    finally:
        await conn.close()

    assert total >= len(JOBS) * rounds * span_min
    first = Counter((e["job"], e["tick"]) for _, e in fired if not e.get("recovered"))
    assert len(first) == total and set(first.values()) == {1}, "each tick fired once"
    assert not [e for _, e in fired if e.get("recovered")], "no tick looked abandoned"
    per_tx = Counter(r["transaction_id"] for r in runs)
    assert len(per_tx) == total and set(per_tx.values()) == {1}, "one execution per tick"
    assert len(recorded) == total, "one run of the tick's step per tick"


# -- outbox ------------------------------------------------------------------------------------


async def read_until_quiet(bootstrap: str, topic: str, at_least: int,
                           quiet: float = 2.0, timeout: float = 60.0) -> list[Any]:
    """Every record of ``topic``: until there are ``at_least`` and none came for ``quiet`` s."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    out: list[Any] = []
    deadline = time.monotonic() + timeout
    last = time.monotonic()
    try:
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for recs in batch.values():
                out.extend(recs)
                last = time.monotonic()
            if len(out) >= at_least and time.monotonic() - last > quiet:
                break
    finally:
        await consumer.stop()
    return out


@pytest.mark.broker
async def test_three_relays_publish_each_outbox_row_once(
        dsn: str, schema: str, kafka_bootstrap: str, prefix: str, tmp_path: Path) -> None:
    kafka = await kafka_env(kafka_bootstrap, prefix, tmp_path)

    def env(name: str) -> dict[str, str]:
        # small relay batches: the three relays take turns on the same backlog
        return worker_env(dsn, schema, FLOWS, HUB_WORKER_ID=name, HUB_POLL_INTERVAL="0.2",
                          HUB_KAFKA_RELAY_BATCH="5", **kafka)

    n = 300
    conn = await asyncpg.connect(dsn)
    try:
        async with Hub(dsn, schema=schema, execute=False) as starter, workers(env) as ws:
            await conn.execute(INVOCATIONS_DDL.format(schema=schema))
            for name in ("w1", "w2", "w3"):
                await ws.start(name)
            for i in range(n):
                await starter.start(WORKFLOW, {"id": f"o{i}", "sleep": 0.0, "emit": True},
                                    transaction_id=f"scale:o{i}", wait=False)
            await wait_for(conn, f"SELECT count(*) FROM {schema}.outbox "
                                 "WHERE sent_at IS NOT NULL", 2 * n, 90, "outbox rows sent")
            records = await read_until_quiet(kafka_bootstrap, f"{prefix}.{DONE_TOPIC}", 2 * n)
            await ws.stop_all()
        rows = await conn.fetch(f"SELECT id::text AS id, attempts FROM {schema}.outbox")
    finally:
        await conn.close()

    assert len(rows) == 2 * n
    published = Counter(dict(r.headers)[h.EVENT_ID].decode() for r in records)
    assert set(published) == {r["id"] for r in rows}, "every row published"
    twice = {k: v for k, v in published.items() if v > 1}
    assert not twice, f"{len(twice)} outbox rows published more than once"
    assert {r["attempts"] for r in rows} == {1}, "each row claimed by one relay, once"
