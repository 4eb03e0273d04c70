"""Event ingestion of the hub: ``order.placed`` events in Kafka -> durable workflow starts.

Self-contained: starts an embedded PostgreSQL (temporary folder, ``track_commit_timestamp=on``
so commit times can be read back) and the embedded Tansu broker, creates ``order.placed``
(8 partitions) and ``order.placed.dlq``, then runs three processes:

  worker    ONE subprocess (``--worker`` mode of this file): ``Hub(dsn, execute=False)`` and
            ``KafkaRuntime`` with the project's real subscriber ``subscribers.orders`` (decode,
            validate with ``OrderPlaced``, ``fulfil_order(...).run(wait=False,
            transaction_id="order.placed:<id>")``: dedupe by transaction id, durable start with
            lineage in one INSERT per batch, then the offset commit). Workflows are not executed.
            ``--cli-worker`` runs ``python -m hub worker --consume --no-execute`` instead.
  producer  a subprocess (``--producer`` mode) publishing valid ``OrderPlaced`` JSON, key = the
            order id, header ``sent-at-ns`` = ``time.time_ns()`` at send and the record
            timestamp (CreateTime) set to the same instant in ms; as fast as it can
            (``--events N``) or at a steady ``--rate R`` for ``--seconds S``.
  this      counts the starts in Postgres (executions of ``fulfil-order``) until all are there,
            checks the group's committed offsets against the end offsets, stops the worker and
            reads everything back.

Latency: the trigger the hub stores (lineage) carries the record's timestamp, key and event id
but not its headers, so ``sent-at-ns`` is recovered by reading the topic back and joining on
the event id (= ``trigger.event_id``). Reported per event:

  p50_ms / p99_ms   header ``sent-at-ns`` -> ``execution.created_at`` (Postgres ``now()``,
                    i.e. the start of the INSERT's transaction; same machine, same clock)
  latency.*         the same from the record timestamp (``trigger.timestamp``, ms) and from
                    the header to the commit of the INSERT (``pg_xact_commit_timestamp``)

Throughput: ``events_per_s`` = starts / (last created_at - first created_at).

Also reported: ``committed_offsets_ok`` (the group's committed offset of every partition equals
its end, taken as the fetch high watermark: Tansu's ListOffsets(latest) under-reports it, see
``tansu_list_offsets_end``), ``duplicates`` (executions beyond one per event), ``redelivered``
(events handled more than once), the consumer's stats, and the CPU seconds each process used
while ingesting (``others`` = the rest of the machine: on a shared box, read the figures with it).

Logs go to stderr; prints one JSON line on stdout.

    python bench/ingest.py [--events 30000]
    python bench/ingest.py --rate 1000 [--seconds 10] [--cli-worker]
    python bench/ingest.py --events 10000 --profile /tmp/worker.prof   # cProfile the worker's
                                                                       # ingestion (to stderr)
    python bench/ingest.py --loop asyncio          # the worker on asyncio's own loop
    python bench/ingest.py --format avro           # registry-framed Avro instead of JSON

``--format avro``: the topic is declared ``format: avro`` (subject ``order.placed-value``), the
producer writes each event with fastavro in the model's own Avro form
(``hub.runtime.schema_of.registry_schema``) framed for schema id 1, and the worker decodes by
id and validates into ``OrderPlaced``. No registry runs on this machine
(docs/decisions/schema-registry-testing.md): the worker's registry client gets the schema as
a recorded reply, asked once per id, so the figure is the Avro decode path after the first
lookup, as against a real registry.

``cpu_us_per_event``: the CPU time of the worker, Postgres and the broker per event; on a
shared machine it moves far less than wall-clock throughput, so compare cuts by it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

TOPIC = "order.placed"
DLQ = "order.placed.dlq"
PARTITIONS = 8
GROUP = "hub"
SCHEMA = "hub"
WORKFLOW = "fulfil-order"
SENT_AT = "sent-at-ns"

SCHEMA_ID = 1
"""The id the Avro frames carry (``--format avro``)."""


def topics_yaml(fmt: str) -> str:
    declared = "\n    format: avro" if fmt == "avro" else ""
    return f"""
topics:
  {TOPIC}:
    partitions: {PARTITIONS}
    event: workflows.events:OrderPlaced
    schema_version: 1{declared}
    dead_letter: {DLQ}
  {DLQ}:
    partitions: 1
"""


def avro_text() -> str:
    """``OrderPlaced``'s Avro form, as ``hub topics check`` and the outbox register it."""
    from hub.runtime.schema_of import registry_schema
    from workflows.events import OrderPlaced

    return registry_schema(OrderPlaced, "avro")[0]


def encoder(fmt: str) -> Any:
    """order dict -> the record's value in ``fmt``."""
    if fmt == "json":
        return lambda ev: json.dumps(ev).encode()
    import io

    import fastavro

    from hub.runtime.wireformat import frame

    parsed = fastavro.parse_schema(json.loads(avro_text()))

    def avro(ev: dict[str, Any]) -> bytes:
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, parsed, ev)
        return frame(SCHEMA_ID, buf.getvalue())

    return avro


def log(msg: str) -> None:
    print(f"[ingest] {msg}", file=sys.stderr, flush=True)


def pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    k = max(0, min(len(s) - 1, round(p / 100 * len(s) + 0.5) - 1))
    return round(s[k], 3)


def summary(ms: list[float]) -> dict[str, Any]:
    if not ms:
        return {"n": 0}
    return {"n": len(ms), "mean_ms": round(statistics.fmean(ms), 3), "p50_ms": pct(ms, 50),
            "p95_ms": pct(ms, 95), "p99_ms": pct(ms, 99), "max_ms": round(max(ms), 3)}


def order(i: int) -> dict[str, Any]:
    return {"id": f"ord-{i:07d}", "customer_email": f"c{i}@example.com", "currency": "EUR",
            "lines": [{"sku": "SKU-1", "quantity": 2, "unit_price": 500},
                      {"sku": "SKU-2", "quantity": 1, "unit_price": 250}],
            "total": 1250}


# --- producer subprocess -----------------------------------------------------------------------


async def produce(bootstrap: str, events: int, rate: float, fmt: str) -> None:
    from aiokafka import AIOKafkaProducer

    encode = encoder(fmt)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
    await producer.start()
    t0 = time.perf_counter()
    try:
        for i in range(events):
            if rate > 0:
                delay = t0 + i / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            ev = order(i)
            body = encode(ev)
            sent = time.time_ns()
            await producer.send(TOPIC, body, key=ev["id"].encode(),
                                timestamp_ms=sent // 1_000_000,
                                headers=[(SENT_AT, str(sent).encode())])
            if rate <= 0 and i % 1000 == 999:
                await producer.flush()
        await producer.flush()
    finally:
        await producer.stop()
    cpu = os.times()
    print(f"PRODUCED {events} {time.perf_counter() - t0:.3f} {cpu.user + cpu.system:.3f}",
          flush=True)


# --- worker subprocess -------------------------------------------------------------------------


async def work(bootstrap: str, dsn: str, topics_file: str, fmt: str,
               profiler: Any = None) -> dict[str, Any]:
    import subscribers.orders  # noqa: F401  (registers on_order_placed)
    from hub.engine.hub import Hub
    from hub.runtime.service import KafkaRuntime
    from hub.runtime.subscriber import SUBSCRIBERS, SubscriberRegistry
    from hub.runtime.topics import load_topics
    from hub.settings import KafkaSettings
    from hub.tracing import configure_tracing

    configure_tracing("bench-ingest")  # on only when the orchestrator set OTEL_*
    registry = SubscriberRegistry()
    registry.add(SUBSCRIBERS.get("on_order_placed"))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    settings = KafkaSettings(bootstrap=bootstrap, group=GROUP, topics_file=Path(topics_file))
    schemas = None
    if fmt == "avro":
        from bench.formats import recorded_registry

        schemas = recorded_registry(avro_text())
    async with Hub(dsn, schema=SCHEMA, execute=False) as hub:
        rt = KafkaRuntime(hub, settings, subscribers=registry,
                          topics=load_topics(topics_file), create_topics=False,
                          registry=schemas)
        await rt.start()
        try:
            assert rt.consumer is not None
            await asyncio.wait_for(rt.consumer.ready.wait(), 60)
            print("READY", flush=True)
            if profiler is not None:  # only the ingestion, not the start-up
                profiler.enable()
            try:
                await stop.wait()
            finally:
                if profiler is not None:
                    profiler.disable()
            stats = dict(rt.consumer.stats)
        finally:
            await rt.stop()
            if schemas is not None:
                stats["registry_fetches"] = schemas.fetches
                await schemas.aclose()
        stats["statements"] = hub.store.statements
        stats["settings"] = {k: getattr(settings, k) for k in (
            "fetch_max_wait_ms", "max_poll_records", "max_in_flight_per_partition",
            "max_backlog_per_partition")}
        return stats


def worker_main(args: argparse.Namespace) -> None:
    from hub import aio
    from hub.logging import configure_logging

    configure_logging(args.log_level)
    run = asyncio.run if args.loop == "asyncio" else aio.run  # aio.run: what `hub worker` uses
    if args.profile:
        import cProfile

        prof = cProfile.Profile()
        try:
            stats = run(work(args.bootstrap, args.dsn, args.topics_file, args.format, prof))
        finally:
            prof.dump_stats(args.profile)
    else:
        stats = run(work(args.bootstrap, args.dsn, args.topics_file, args.format))
    stats["loop"] = args.loop
    print("STATS " + json.dumps(stats), flush=True)


# --- orchestrator ------------------------------------------------------------------------------


class Children:
    """The subprocesses this run started; all killed in ``close`` whatever happened."""

    def __init__(self) -> None:
        self.procs: list[asyncio.subprocess.Process] = []

    async def spawn(self, *argv: str, module: str | None = None,
                    env: dict[str, str] | None = None,
                    pipe_stderr: bool = False) -> asyncio.subprocess.Process:
        """``python bench/ingest.py ARGV`` (or ``python -m MODULE ARGV``)."""
        from hub.runtime.tansu import parent_death_preexec

        full_env = {**os.environ, **(env or {})}
        full_env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(ROOT), full_env.get("PYTHONPATH", "")) if p)
        target = ["-m", module] if module else [str(Path(__file__).resolve())]
        proc = await asyncio.create_subprocess_exec(
            sys.executable, *target, *argv, cwd=str(ROOT),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE if pipe_stderr else None, env=full_env,
            preexec_fn=parent_death_preexec(signal.SIGKILL))
        self.procs.append(proc)
        return proc

    async def close(self) -> None:
        for p in self.procs:
            if p.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    p.kill()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(p.wait(), 10)


class CpuMeter:
    """CPU seconds used between two marks by the worker, the broker, this run's Postgres server
    (the postmaster and its children) and everything else on the machine (other users)."""

    def __init__(self, worker_pid: int, broker_pid: int | None, pgdata: Path) -> None:
        self.groups = {"worker": {worker_pid}, "broker": {broker_pid} if broker_pid else set()}
        self.pgdata = pgdata
        self.start: dict[str, float] = {}
        self.t0 = 0.0

    def _postgres_pids(self) -> set[int]:
        import psutil

        try:
            pid = int((self.pgdata / "postmaster.pid").read_text().split()[0])
            master = psutil.Process(pid)
            return {pid, *(c.pid for c in master.children(recursive=True))}
        except (OSError, ValueError, IndexError, psutil.Error):
            return set()

    def _sample(self) -> dict[str, float]:
        import psutil

        groups = {**self.groups, "postgres": self._postgres_pids(), "orchestrator": {os.getpid()}}
        out = dict.fromkeys(groups, 0.0)
        for group, pids in groups.items():
            for pid in pids:
                try:
                    t = psutil.Process(pid).cpu_times()
                    out[group] += t.user + t.system
                except psutil.Error:
                    continue
        sys_t = psutil.cpu_times()
        out["machine_busy"] = sum(sys_t) - sys_t.idle - getattr(sys_t, "iowait", 0.0)
        return out

    def mark(self) -> None:
        self.start = self._sample()
        self.t0 = time.perf_counter()

    def since(self, producer_cpu_s: float) -> dict[str, float]:
        end = self._sample()
        out = {k: round(end[k] - self.start.get(k, 0.0), 3) for k in end}
        out["producer"] = producer_cpu_s
        # CPU the rest of the machine (other processes, other users) used meanwhile; postgres
        # backends that exited before the end mark are counted here too
        ours = sum(v for k, v in out.items() if k != "machine_busy")
        out["others"] = round(max(0.0, out.pop("machine_busy") - ours), 3)
        out["wall_s"] = round(time.perf_counter() - self.t0, 3)
        return out


async def read_line(proc: asyncio.subprocess.Process, prefix: str, timeout: float) -> str:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"no {prefix!r} line from pid {proc.pid} in {timeout}s")
        raw = await asyncio.wait_for(proc.stdout.readline(), remaining)
        if not raw:
            raise RuntimeError(f"pid {proc.pid} exited (rc={await proc.wait()}) before "
                               f"printing {prefix!r}")
        line = raw.decode().strip()
        if line.startswith(prefix):
            return line


class CliWorker:
    """``python -m hub worker --consume --no-execute``: the production entry point, configured
    through ``HUB_*`` variables; readiness and the consumer's stats come from its JSON logs."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.assigned: set[str] = set()
        self.ready = asyncio.Event()
        self.stats: dict[str, Any] | None = None
        self.stopped = asyncio.Event()
        self._task = asyncio.create_task(self._read_logs())

    @staticmethod
    async def spawn(children: Children, bootstrap: str, dsn: str,
                    topics_file: Path) -> CliWorker:
        env = {"HUB_DATABASE_URL": dsn, "HUB_SCHEMA": SCHEMA, "HUB_MODULES": "workflows",
               "HUB_KAFKA_BOOTSTRAP": bootstrap, "HUB_KAFKA_GROUP": GROUP,
               "HUB_KAFKA_TOPICS_FILE": str(topics_file), "HUB_KAFKA_SUBSCRIBERS": "subscribers"}
        proc = await children.spawn("worker", "--consume", "--no-execute", "--log-level",
                                    "info", "--json-logs", module="hub", env=env,
                                    pipe_stderr=True)
        return CliWorker(proc)

    async def _read_logs(self) -> None:
        assert self.proc.stderr is not None
        async for raw in self.proc.stderr:
            line = raw.decode("utf-8", "replace").strip()
            try:
                entry = json.loads(line)
            except ValueError:
                entry = None
            if not isinstance(entry, dict):
                if line:
                    print(line, file=sys.stderr, flush=True)
                continue
            event = entry.get("event")
            if event == "partitions_assigned":
                self.assigned.update(p for p in entry.get("partitions", [])
                                     if p.startswith(f"{TOPIC}/"))
                if len(self.assigned) >= PARTITIONS:
                    self.ready.set()
            elif event == "consumer_stopped":
                self.stats = {k: entry[k] for k in ("handled", "dead_lettered", "batches",
                                                    "starts") if k in entry}
                self.stopped.set()
            elif entry.get("level") in ("warning", "error", "critical"):
                print(line, file=sys.stderr, flush=True)

    async def wait_ready(self, timeout: float) -> None:
        await read_line(self.proc, "{", timeout)  # worker_ready, printed once it is started
        await asyncio.wait_for(self.ready.wait(), timeout)

    async def stop(self, timeout: float) -> dict[str, Any]:
        self.proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(self.proc.wait(), timeout)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._task, 5)
        return {**(self.stats or {}), "worker": "python -m hub worker --consume --no-execute"}


async def committed_offsets(bootstrap: str) -> dict[int, tuple[int | None, int]]:
    """partition -> (the group's committed offset, ListOffsets(latest) end offset)."""
    from hub.runtime.admin import consumer_lag
    from hub.settings import KafkaSettings

    lags = await consumer_lag(KafkaSettings(bootstrap=bootstrap, group=GROUP), bootstrap, [TOPIC])
    return {lag.partition: (lag.committed, lag.end) for lag in lags}


async def read_back(bootstrap: str, expected: int) -> tuple[dict[str, tuple[int, int, int]],
                                                             dict[int, int]]:
    """Read the topic from the start: event id -> (sent-at-ns header, record timestamp ms,
    timestamp type), and each partition's end offset as the fetch responses' high watermark.

    (Tansu's ListOffsets(latest) answers the base offset of the partition's last batch + 1,
    not its last offset + 1, so ``end_offsets()`` is not used for the end.)
    """
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                auto_offset_reset="earliest")
    await consumer.start()
    out: dict[str, tuple[int, int, int]] = {}
    try:
        tps = [TopicPartition(TOPIC, p) for p in range(PARTITIONS)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        deadline = time.monotonic() + 120
        seen = 0
        idle = 0
        while time.monotonic() < deadline and (seen < expected or idle < 2):
            got = await consumer.getmany(timeout_ms=300, max_records=5000)
            idle = 0 if got else idle + 1
            for recs in got.values():
                for r in recs:
                    seen += 1
                    headers = dict(r.headers or ())
                    key = r.key.decode() if r.key is not None else ""
                    out[key] = (int(headers[SENT_AT]), r.timestamp, r.timestamp_type)
        high = {tp.partition: consumer.highwater(tp) or 0 for tp in tps}
    finally:
        await consumer.stop()
    return out, high


async def orchestrate(args: argparse.Namespace, bootstrap: str, dsn: str,
                      topics_file: Path, broker_pid: int | None,
                      pgdata: Path, jaeger: Any = None) -> dict[str, Any]:
    import asyncpg

    trace_env: dict[str, str] = {}
    if jaeger is not None:  # the worker exports what it samples to a real Jaeger
        trace_env = {"OTEL_EXPORTER_OTLP_ENDPOINT": jaeger.otlp_endpoint,
                     "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
                     "OTEL_TRACES_SAMPLER_ARG": str(args.trace_ratio),
                     "OTEL_BSP_SCHEDULE_DELAY": "200"}

    rate = args.rate or 0.0
    total = int(rate * args.seconds) if rate > 0 else args.events
    children = Children()
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    try:
        t_ready = time.perf_counter()
        cli: CliWorker | None = None
        if args.cli_worker:
            cli = await CliWorker.spawn(children, bootstrap, dsn, topics_file)
            worker = cli.proc
            await cli.wait_ready(90)
        else:
            worker_argv = ["--worker", "--bootstrap", bootstrap, "--dsn", dsn,
                           "--topics-file", str(topics_file), "--log-level", args.log_level,
                           "--loop", args.loop, "--format", args.format]
            if args.profile:
                worker_argv += ["--profile", args.profile]
            worker = await children.spawn(*worker_argv, env=trace_env)
            await read_line(worker, "READY", 90)
        log(f"worker pid {worker.pid} ready (group joined) in "
            f"{time.perf_counter() - t_ready:.2f}s; producing {total} events")
        meter = CpuMeter(worker.pid, broker_pid, pgdata)
        meter.mark()
        producer = await children.spawn("--producer", bootstrap, "--events", str(total),
                                        "--rate", str(rate), "--format", args.format)
        produced_line = asyncio.create_task(read_line(producer, "PRODUCED", 600))
        count_sql = (f"SELECT count(*) FROM {SCHEMA}.execution WHERE workflow = $1")
        deadline = time.monotonic() + (total / rate if rate > 0 else 0) + args.timeout
        count = 0
        while True:
            count = await pool.fetchval(count_sql, WORKFLOW)
            if count >= total:
                break
            if worker.returncode is not None:
                raise RuntimeError(f"worker exited (rc={worker.returncode}) at {count} starts")
            if produced_line.done() and produced_line.exception() is not None:
                raise RuntimeError(f"producer failed: {produced_line.exception()!r}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {count}/{total} starts after the deadline")
            await asyncio.sleep(0.1)
        produced = (await produced_line).split()
        cpu = meter.since(float(produced[3]))
        producer_wall_s = float(produced[2])
        sent, high = await read_back(bootstrap, total)
        # the offset commit follows the INSERT: give it a moment to land
        t_end = time.monotonic() + 15
        while time.monotonic() < t_end:
            now = await committed_offsets(bootstrap)
            if all(now.get(p, (None, 0))[0] == high[p] for p in high):
                break
            await asyncio.sleep(0.2)
        if cli is not None:
            worker_stats = await cli.stop(60)
        else:
            worker.send_signal(signal.SIGTERM)
            stats_line = await read_line(worker, "STATS", 60)
            worker_stats = json.loads(stats_line[len("STATS "):])
            await asyncio.wait_for(worker.wait(), 30)
        traces = await traces_in(jaeger) if jaeger is not None else None
        final = await committed_offsets(bootstrap)
        offsets = {str(p): [final.get(p, (None, 0))[0], high[p]] for p in sorted(high)}
        ok = len(high) == PARTITIONS and all(c == e for c, e in offsets.values()) and sum(
            high.values()) == total
        list_offsets_end = {str(p): final[p][1] for p in sorted(final)}

        rows = await pool.fetch(
            f"""SELECT trigger->>'event_id' AS event_id, (trigger->>'timestamp')::bigint AS ts,
                       transaction_id,
                       extract(epoch FROM created_at)::float8 AS created,
                       extract(epoch FROM pg_xact_commit_timestamp(xmin))::float8 AS committed
                FROM {SCHEMA}.execution WHERE workflow = $1""", WORKFLOW)
    finally:
        await pool.close()
        await children.close()

    created = [r["created"] for r in rows]
    span = max(created) - min(created) if len(created) > 1 else 0.0
    hdr_created: list[float] = []
    ts_created: list[float] = []
    hdr_commit: list[float] = []
    ts_skew: list[float] = []
    ts_types: set[int] = set()
    unmatched = 0
    for r in rows:
        s = sent.get(r["event_id"])
        if s is None:
            unmatched += 1
            continue
        sent_ns, rec_ts, ts_type = s
        ts_types.add(ts_type)
        hdr_created.append(r["created"] * 1000 - sent_ns / 1e6)
        ts_created.append(r["created"] * 1000 - r["ts"])
        if r["committed"] is not None:
            hdr_commit.append(r["committed"] * 1000 - sent_ns / 1e6)
        ts_skew.append(sent_ns / 1e6 - rec_ts)
    first_sent = min((s[0] for s in sent.values()), default=0) / 1e9
    last_commit = max((r["committed"] or r["created"] for r in rows), default=0.0)
    distinct_tx = len({r["transaction_id"] for r in rows})
    distinct_events = len({r["event_id"] for r in rows})
    handled = worker_stats.get("handled", 0)
    batches = worker_stats.get("batches", 0)
    lat = summary(hdr_created)
    return {
        "bench": "ingest",
        "mode": f"rate {rate:g}/s for {args.seconds:g}s" if rate > 0 else "max",
        "format": args.format,
        "registry": None if args.format == "json" else (
            f"schema id {SCHEMA_ID} answered by a recorded reply, asked once per id "
            "(no registry runs here: docs/decisions/schema-registry-testing.md)"),
        "events": total,
        "starts": len(rows),
        "events_per_s": round(len(rows) / span, 1) if span > 0 else None,
        "p50_ms": lat.get("p50_ms"),
        "p99_ms": lat.get("p99_ms"),
        "latency_from": "header sent-at-ns -> execution.created_at (header joined on event id)",
        "latency": {
            "header_to_created_at": lat,
            "record_timestamp_to_created_at": summary(ts_created),
            "header_to_commit": summary(hdr_commit),
        },
        "record_timestamp_type": sorted(ts_types),
        "record_timestamp_minus_header_ms": summary(ts_skew) if ts_skew else None,
        "first_send_to_last_commit_s": round(last_commit - first_sent, 3) if rows else None,
        "producer_wall_s": producer_wall_s,
        "committed_offsets_ok": ok,
        "committed_vs_end": offsets,
        "tansu_list_offsets_end": list_offsets_end,
        "duplicates": len(rows) - min(distinct_tx, distinct_events),
        "missing": total - distinct_events,
        "redelivered": handled - total,
        "unmatched_in_topic": unmatched,
        "tracing": None if jaeger is None else {
            "sampler": f"parentbased_traceidratio {args.trace_ratio:g}",
            "backend": "jaeger v1.75.0 (OTLP/HTTP)",
            "traces_in_backend": traces,
            "expected_about": round(total * args.trace_ratio)},
        "cpu_s_while_ingesting": cpu,
        # CPU time moves less than wall time on a shared machine: the figure to compare
        "cpu_us_per_event": {k: round(cpu[k] / total * 1e6, 1) for k in (
            "worker", "postgres", "broker")} if total else None,
        "consumer": {**worker_stats, "mean_batch": round(handled / batches, 1) if batches else 0},
        "loadavg_1m_at_end": round(os.getloadavg()[0], 2),
        "cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "python": sys.version.split()[0],
    }


async def traces_in(jaeger: Any) -> int:
    """How many traces of the worker Jaeger holds once its exports have settled: the proof
    that tracing was on, and sampling at about the ratio asked for."""
    import httpx

    seen, stable = -1, 0
    async with httpx.AsyncClient(base_url=jaeger.query_url, timeout=10) as http:
        while stable < 3:  # the same count three polls running: the batches have landed
            reply = await http.get("/api/traces", params={
                "service": "bench-ingest", "limit": "9999", "lookback": "1h"})  # < max_traces
            reply.raise_for_status()
            count = len(reply.json().get("data") or [])
            stable = stable + 1 if count == seen else 0
            seen = count
            await asyncio.sleep(0.5)
    return seen


def print_profile(path: str, top: int) -> None:
    import pstats

    for key in ("tottime", "cumulative"):
        print(f"\n===== worker profile, top {top} by {key} =====", file=sys.stderr)
        pstats.Stats(path, stream=sys.stderr).sort_stats(key).print_stats(top)


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--events", type=int, default=30000, help="events, as fast as possible")
    ap.add_argument("--rate", type=float, default=None, help="events/s (steady-rate mode)")
    ap.add_argument("--seconds", type=float, default=10.0, help="duration with --rate")
    ap.add_argument("--timeout", type=float, default=120.0,
                    help="seconds allowed (after producing) for every start to be stored")
    ap.add_argument("--cli-worker", action="store_true",
                    help="run the worker as `python -m hub worker --consume --no-execute` "
                         "instead of this script's --worker mode (no --profile, fewer stats)")
    ap.add_argument("--profile", metavar="FILE", help="cProfile the worker into FILE")
    ap.add_argument("--profile-top", type=int, default=35)
    ap.add_argument("--trace-ratio", type=float, default=None, metavar="R",
                    help="trace the worker, sampling R of the events (e.g. 0.01), exported "
                         "to a Jaeger started for the run (scripts/install-jaeger builds it)")
    ap.add_argument("--log-level", default="warning")
    ap.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop",
                    help="the worker's event loop (uvloop: as `hub worker` runs, hub.aio.run)")
    ap.add_argument("--format", choices=("json", "avro"), default="json",
                    help="the records' format: plain JSON, or Avro framed for the registry")
    # internal modes
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--producer", metavar="BOOTSTRAP", help=argparse.SUPPRESS)
    ap.add_argument("--bootstrap", help=argparse.SUPPRESS)
    ap.add_argument("--dsn", help=argparse.SUPPRESS)
    ap.add_argument("--topics-file", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.producer:
        asyncio.run(produce(args.producer, args.events, args.rate or 0.0, args.format))
        return
    if args.worker:
        worker_main(args)
        return
    if args.rate is not None and args.rate <= 0:
        ap.error("--rate must be > 0 (omit it for as-fast-as-possible)")
    if args.profile and args.cli_worker:
        ap.error("--profile needs this script's own worker (drop --cli-worker)")
    if args.format != "json" and args.cli_worker:
        ap.error("--format avro needs this script's own worker (drop --cli-worker)")
    if args.profile:
        args.profile = str(Path(args.profile).resolve())
    if args.trace_ratio is not None and not 0 < args.trace_ratio <= 1:
        ap.error("--trace-ratio must be in (0, 1]")
    if args.trace_ratio is not None and args.cli_worker:
        ap.error("--trace-ratio needs this script's own worker (drop --cli-worker)")

    from hub.logging import configure_logging
    from hub.runtime.tansu import TansuBroker
    from hub.store.embedded import EmbeddedPostgres

    configure_logging(args.log_level)
    tmp = tempfile.mkdtemp(prefix="bench_ingest_", dir="/tmp")
    os.chmod(tmp, 0o755)
    server: EmbeddedPostgres | None = None
    broker: TansuBroker | None = None
    result: dict[str, Any] | None = None
    jaeger: Any = None
    try:
        if args.trace_ratio is not None:
            from tests.support.jaeger import start_jaeger

            jaeger = start_jaeger(Path(tmp))
            log(f"jaeger: OTLP {jaeger.otlp_endpoint}, query {jaeger.query_url}")
        topics_file = Path(tmp) / "topics.yaml"
        topics_file.write_text(topics_yaml(args.format))
        server = EmbeddedPostgres(Path(tmp) / "pgdata",
                                  settings={"track_commit_timestamp": "on"})
        log(f"starting embedded Postgres in {tmp}")
        dsn = server.start()
        broker = TansuBroker()
        bootstrap = broker.start()  # main thread: the broker dies with this process
        broker.create_topic(TOPIC, PARTITIONS)
        broker.create_topic(DLQ, 1)
        log(f"broker {bootstrap}, topics {TOPIC} ({PARTITIONS} partitions) and {DLQ}")
        result = asyncio.run(orchestrate(args, bootstrap, dsn, topics_file, broker.pid,
                                         Path(tmp) / "pgdata", jaeger))
    finally:
        if jaeger is not None:
            jaeger.stop()
        if broker is not None:
            broker.stop()
        if server is not None:
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    if args.profile:
        print_profile(args.profile, args.profile_top)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
