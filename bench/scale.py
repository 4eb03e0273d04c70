"""Scale-out: workflows/s with 1, 2 and 3 ``hub worker`` processes sharing one Postgres and one
broker, on one machine.

Self-contained: starts an embedded PostgreSQL (temporary folder, server defaults plus
``track_commit_timestamp=on`` so that commit times can be read back) and the embedded Tansu
broker. Then, for each worker count K of ``--workers`` (default ``1,2,3``; ``--rounds`` repeats
the list, interleaved, and the summary takes each figure's median), on a fresh schema, a fresh
consumer group and topics of its own (``HUB_KAFKA_TOPIC_PREFIX=k<K>.``, ``k<K>r<N>.`` in round
N > 1; topic ``scale.jobs`` with ``--partitions`` partitions, 8 by default):

  workers   K subprocesses ``python -m hub worker`` (executor, scheduler, Kafka consumer and
            outbox relay: the production entry point), ``HUB_MODULES`` and
            ``HUB_KAFKA_SUBSCRIBERS`` = ``bench.scale_flows``: the subscriber of ``scale.jobs``
            starts ``bench-scale-three-steps`` (three steps that do no I/O) with
            ``wait=False``, transaction id ``scale:<event id>``. The bench waits until every
            worker said ``worker_ready`` and the group is ``Stable`` with K members.
  warm-up   ``--warmup`` events through Kafka, not measured.
  kafka     a producer subprocess (connected first; the clock starts when it is told to go)
            publishes ``--events`` events as fast as it can, key = event id (spread over the
            partitions), payload ``{"id", "sent_ns", "phase"}`` with ``sent_ns`` =
            ``time.time_ns()`` at send. The workers drain the backlog.
  rate      the same at a steady ``--rate`` events/s for ``--seconds`` (below the capacity of
            one worker): the latency of a hub that keeps up.
  engine    (``--engine-runs``, 0 to skip) this process starts that many runs directly in
            Postgres (``Hub(execute=False).start(wait=False)``, 50 at a time, batched by the
            hub's start batcher; ``sent_ns`` = just before the call): no Kafka on the way (the
            workers' consumers are connected but idle), the workers claim the runs.

Reported per worker count and phase, from the database once every run finished:

  workflows_per_s         runs / (last finish committed - first event sent)
  steady_workflows_per_s  the middle 80% of finishes / the time they took (no ramp-up or
                          tail): the drain rate the workers sustain
  p50_ms / p99_ms         event sent (``sent_ns``) -> the execution's final checkpoint
                          committed (``pg_xact_commit_timestamp``); same machine, same clock.
                          In ``kafka`` and ``engine`` every event is sent at once, so these
                          are mostly time spent queued behind the others; ``rate`` is the
                          latency figure.
  cpu                     CPU seconds of each worker, of Postgres (postmaster and backends), of
                          the broker, of the producer and of this process between the go and
                          the last finish; ``others`` = the rest of the machine (other users:
                          read the figures with it); ``*_cores`` = seconds / wall seconds.
  summary                 per worker count: the steady rates, the rate phase's latency, the
                          duplicates, and the CPU each workflow cost (workers, Postgres, all of
                          this run's processes) with the ceiling that cost implies if the run
                          had every core to itself (``cpu_bound_ceiling_workflows_per_s``):
                          on a shared machine the rates move with the neighbours' load, the
                          cost per workflow much less.
  duplicates              from the step log every worker writes (``bench.scale_flows``): step
                          invocations beyond one per (execution, step) (``step_reinvocations``),
                          pairs of invocations of one (execution, step) whose [start, end]
                          intervals overlap (``overlapping_invocations``), executions beyond
                          one per event (``executions_twice``). All must be 0: no worker is
                          killed here, so nothing may be invoked twice at all.
  spread                  step invocations per worker, and runs whose steps ran in more than
                          one worker (``runs_on_several_workers``).

The machine has 2 cores, shared by the workers, Postgres, the broker and the producer: once
they keep both busy, more workers only split the same CPU, so 2 and 3 workers cannot scale
linearly here. What scaling out costs shows in ``*_cpu_ms_per_workflow`` (flat in K: the
claims, leases and the consumer group add little), and where the cost caps these cores in
``cpu_bound_ceiling_workflows_per_s``; on a bigger machine the workers spread over more cores
until Postgres's commits are the limit (``shared/bench/pg_limits.py``).

Logs go to stderr (the workers' warnings too); prints one JSON line on stdout.

    python bench/scale.py [--workers 1,2,3] [--rounds 1] [--events 4000]
                          [--rate 200 --seconds 10] [--engine-runs 3000] [--warmup 300]
                          [--partitions 8]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import glob
import json
import os
import platform
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.scale_flows import DEAD_LETTER, STEP_LOG_DIR, TOPIC, WORKFLOW  # noqa: E402

MODULE = "bench.scale_flows"
ENGINE_CONCURRENCY = 50

TOPICS_YAML = """
topics:
  {topic}:
    partitions: {partitions}
    event: bench.scale_flows:ScaleJob
    dead_letter: {dlq}
  {dlq}:
    partitions: 1
"""


def log(msg: str) -> None:
    print(f"[bench/scale] {msg}", file=sys.stderr, flush=True)


def pct(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile, rounded to 3 decimals."""
    if not values:
        return None
    s = sorted(values)
    k = max(0, min(len(s) - 1, round(p / 100 * len(s) + 0.5) - 1))
    return round(s[k], 3)


# --- producer subprocess -----------------------------------------------------------------------


async def produce(bootstrap: str, topic: str, phase: str, events: int, rate: float) -> None:
    """Connect, say READY, wait for a line on stdin, then publish; print what it cost."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=2)
    await producer.start()
    try:
        print("READY", flush=True)
        await asyncio.to_thread(sys.stdin.readline)
        c0 = os.times()
        t0 = time.perf_counter()
        pending = []
        for i in range(events):
            if rate > 0:
                delay = t0 + i / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            eid = f"{phase}-{i:07d}"
            body = json.dumps({"id": eid, "sent_ns": time.time_ns(), "phase": phase})
            pending.append(await producer.send(topic, body.encode(), key=eid.encode()))
            if len(pending) >= 1000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
        wall = time.perf_counter() - t0
        c1 = os.times()
    finally:
        await producer.stop()
    cpu = (c1.user + c1.system) - (c0.user + c0.system)
    print(f"PRODUCED {events} {wall:.3f} {cpu:.3f}", flush=True)


# --- processes ---------------------------------------------------------------------------------


class Children:
    """The subprocesses of one run; all stopped in ``close`` whatever happened."""

    def __init__(self) -> None:
        self.procs: list[asyncio.subprocess.Process] = []

    async def spawn(self, argv: list[str], env: dict[str, str], *,
                    stdin: bool = False) -> asyncio.subprocess.Process:
        from hub.runtime.tansu import parent_death_preexec

        proc = await asyncio.create_subprocess_exec(
            sys.executable, *argv, cwd=str(ROOT), env=env,
            stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=None,
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


def base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return env


class CpuMeter:
    """CPU seconds used between two marks by each worker, the broker, this run's Postgres
    server (postmaster and children), this process, and the rest of the machine."""

    def __init__(self, workers: dict[str, int], broker_pid: int | None, pgdata: Path) -> None:
        self.groups: dict[str, set[int]] = {name: {pid} for name, pid in workers.items()}
        self.groups["broker"] = {broker_pid} if broker_pid else set()
        self.groups["orchestrator"] = {os.getpid()}
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

        groups = {**self.groups, "postgres": self._postgres_pids()}
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

    def since(self, producer_cpu_s: float | None, runs: int) -> dict[str, Any]:
        end = self._sample()
        wall = time.perf_counter() - self.t0
        cpu = {k: round(end[k] - self.start.get(k, 0.0), 3) for k in end}
        if producer_cpu_s is not None:
            cpu["producer"] = round(producer_cpu_s, 3)
        # the rest of the machine; Postgres backends that exited before the end mark are
        # counted here too
        ours = sum(v for k, v in cpu.items() if k != "machine_busy")
        busy = cpu.pop("machine_busy")
        cpu["others"] = round(max(0.0, busy - ours), 3)
        workers = sum(v for k, v in cpu.items() if k.startswith("worker-"))
        return {
            "wall_s": round(wall, 3),
            "cpu_s": cpu,
            "cores": {k: round(v / wall, 3) for k, v in cpu.items()} if wall > 0 else {},
            "machine_cores_busy": round(busy / wall, 3) if wall > 0 else None,
            "workers_cpu_ms_per_workflow": round(workers * 1000 / runs, 3) if runs else None,
            "postgres_cpu_ms_per_workflow": (round(cpu["postgres"] * 1000 / runs, 3)
                                             if runs else None),
        }


# --- one worker count --------------------------------------------------------------------------


class Scale:
    """K workers on their own schema, group and topics; the phases run through them."""

    def __init__(self, k: int, tag: str, args: argparse.Namespace, dsn: str, bootstrap: str,
                 broker_pid: int | None, pgdata: Path, tmp: Path) -> None:
        self.k = k
        self.args = args
        self.dsn = dsn
        self.bootstrap = bootstrap
        self.broker_pid = broker_pid
        self.pgdata = pgdata
        self.schema = f"scale_{tag}"
        self.prefix = f"{tag}."
        self.topic = self.prefix + TOPIC
        self.group = f"scale-{tag}"
        self.step_dir = tmp / f"steps-{tag}"
        self.step_dir.mkdir()
        self.topics_file = tmp / "topics.yaml"
        self.children = Children()
        self.workers: dict[str, asyncio.subprocess.Process] = {}
        self.expected = 0  # runs started so far (all phases)

    def worker_env(self, name: str) -> dict[str, str]:
        env = base_env()
        env.update({
            "HUB_DATABASE_URL": self.dsn,
            "HUB_SCHEMA": self.schema,
            "HUB_MODULES": MODULE,
            "HUB_WORKER_ID": name,
            "HUB_KAFKA_BOOTSTRAP": self.bootstrap,
            "HUB_KAFKA_GROUP": self.group,
            "HUB_KAFKA_TOPICS_FILE": str(self.topics_file),
            "HUB_KAFKA_TOPIC_PREFIX": self.prefix,
            "HUB_KAFKA_SUBSCRIBERS": MODULE,
            "HUB_KAFKA_SESSION_TIMEOUT_MS": str(self.args.session_timeout_ms),
            STEP_LOG_DIR: str(self.step_dir),
        })
        if self.args.pool_max is not None:
            env["HUB_POOL_MAX"] = str(self.args.pool_max)
        return env

    async def start_workers(self) -> None:
        for i in range(1, self.k + 1):
            name = f"worker-{i}"
            proc = await self.children.spawn(
                ["-m", "hub", "worker", "--log-level", self.args.log_level, "--json-logs"],
                self.worker_env(f"{self.group}-{name}"))
            self.workers[name] = proc
        for name, proc in self.workers.items():
            line = await read_line(proc, "{", 90)
            if json.loads(line).get("event") != "worker_ready":
                raise RuntimeError(f"{name} did not get ready: {line}")
        await self.wait_group_stable(90)

    async def wait_group_stable(self, timeout: float) -> None:
        """Until the consumer group is Stable with one member per worker (no rebalance left
        to happen during the measurement)."""
        from aiokafka.admin import AIOKafkaAdminClient

        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await admin.start()
        try:
            deadline = time.monotonic() + timeout
            state, members = "?", 0
            while time.monotonic() < deadline:
                resp = await admin.describe_consumer_groups([self.group])
                for r in resp:
                    for g in r.groups:
                        state, members = g[2], len(g[5])
                if state == "Stable" and members == self.k:
                    log(f"K={self.k}: group {self.group} Stable with {members} members")
                    return
                await asyncio.sleep(0.25)
            raise TimeoutError(f"group {self.group}: {state} with {members} members, "
                               f"{self.k} expected")
        finally:
            await admin.close()

    async def stop_workers(self) -> dict[str, int | None]:
        for proc in self.workers.values():
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
        codes: dict[str, int | None] = {}
        for name, proc in self.workers.items():
            try:
                codes[name] = await asyncio.wait_for(proc.wait(), 60)
            except TimeoutError:
                proc.kill()
                codes[name] = await proc.wait()
        return codes

    def meter(self) -> CpuMeter:
        return CpuMeter({n: p.pid for n, p in self.workers.items()}, self.broker_pid,
                        self.pgdata)

    async def wait_finished(self, pool: Any, total: int, timeout: float) -> int:
        """Until ``total`` runs of this schema finished (or ``timeout``); how many did."""
        sql = f"SELECT count(*) FROM {self.schema}.execution WHERE finished_at IS NOT NULL"
        deadline = time.monotonic() + timeout
        while True:
            done = int(await pool.fetchval(sql))
            if done >= total or time.monotonic() > deadline:
                return done
            for name, proc in self.workers.items():
                if proc.returncode is not None:
                    raise RuntimeError(f"{name} exited (rc={proc.returncode}) at {done} "
                                       f"of {total} runs")
            await asyncio.sleep(0.2)

    async def kafka_phase(self, pool: Any, phase: str, events: int,
                          rate: float) -> dict[str, Any]:
        producer = await self.children.spawn(
            [str(Path(__file__).resolve()), "--producer", self.bootstrap, "--topic",
             self.topic, "--phase", phase, "--events", str(events), "--rate", str(rate)],
            base_env(), stdin=True)
        await read_line(producer, "READY", 60)
        meter = self.meter()
        meter.mark()
        assert producer.stdin is not None
        producer.stdin.write(b"go\n")
        await producer.stdin.drain()
        self.expected += events
        budget = (events / rate if rate > 0 else 0) + self.args.timeout
        done = await self.wait_finished(pool, self.expected, budget)
        produced = (await read_line(producer, "PRODUCED", 60)).split()
        cpu = meter.since(float(produced[3]), events)
        await producer.wait()
        out = {"events": events, "mode": f"{rate:g}/s" if rate > 0 else "as fast as possible",
               "producer_wall_s": float(produced[2]), **(await self.phase_stats(pool, phase))}
        out["finished_in_time"] = done >= self.expected
        out["cpu"] = cpu
        return out

    async def engine_phase(self, pool: Any, starter: Any, runs: int) -> dict[str, Any]:
        meter = self.meter()
        meter.mark()
        self.expected += runs
        next_i = 0

        async def feed() -> None:
            nonlocal next_i
            while next_i < runs:
                i = next_i
                next_i += 1
                eid = f"engine-{i:07d}"
                await starter.start(WORKFLOW, {"id": eid, "sent_ns": time.time_ns(),
                                               "phase": "engine"},
                                    transaction_id=f"scale:{eid}", wait=False)

        t0 = time.perf_counter()
        await asyncio.gather(*(feed() for _ in range(ENGINE_CONCURRENCY)))
        started_s = time.perf_counter() - t0
        done = await self.wait_finished(pool, self.expected, self.args.timeout)
        cpu = meter.since(None, runs)
        out = {"runs": runs, "mode": f"started by this process, {ENGINE_CONCURRENCY} at a time",
               "start_wall_s": round(started_s, 3), **(await self.phase_stats(pool, "engine"))}
        out["finished_in_time"] = done >= self.expected
        out["cpu"] = cpu
        return out

    async def phase_stats(self, pool: Any, phase: str) -> dict[str, Any]:
        rows = await pool.fetch(
            f"""SELECT (input->>'sent_ns')::bigint AS sent_ns, status, transaction_id,
                       extract(epoch FROM created_at)::float8 AS created,
                       extract(epoch FROM pg_xact_commit_timestamp(xmin))::float8 AS committed,
                       extract(epoch FROM finished_at)::float8 AS finished
                FROM {self.schema}.execution WHERE input->>'phase' = $1""", phase)
        done = [r for r in rows if r["finished"] is not None]
        ends = sorted((r["committed"] or r["finished"]) for r in done)
        first_sent = min((r["sent_ns"] / 1e9 for r in rows), default=0.0)
        lat = [((r["committed"] or r["finished"]) - r["sent_ns"] / 1e9) * 1000 for r in done]
        to_start = [(r["created"] - r["sent_ns"] / 1e9) * 1000 for r in rows]
        out: dict[str, Any] = {
            "executions": len(rows),
            "finished": len(done),
            "succeeded": sum(1 for r in done if r["status"] == "succeeded"),
            "executions_twice": len(rows) - len({r["transaction_id"] for r in rows}),
        }
        span = (ends[-1] - first_sent) if ends else 0.0
        out["workflows_per_s"] = round(len(done) / span, 1) if span > 0 else None
        if len(ends) >= 10:
            lo, hi = ends[len(ends) // 10], ends[(len(ends) * 9) // 10]
            middle = (len(ends) * 9) // 10 - len(ends) // 10
            out["steady_workflows_per_s"] = round(middle / (hi - lo), 1) if hi > lo else None
        out["p50_ms"] = pct(lat, 50)
        out["p99_ms"] = pct(lat, 99)
        out["max_ms"] = round(max(lat), 3) if lat else None
        out["mean_ms"] = round(statistics.fmean(lat), 3) if lat else None
        out["sent_to_started_p50_ms"] = pct(to_start, 50)
        out["sent_to_started_p99_ms"] = pct(to_start, 99)
        out["first_sent_to_last_finished_s"] = round(span, 3)
        return out

    def step_log(self) -> list[tuple[str, str, int, int, int, int]]:
        out = []
        for path in glob.glob(str(self.step_dir / "steps-*.tsv")):
            with open(path, encoding="utf-8") as f:
                for line in f:
                    ex, step, attempt, t0, t1, pid = line.rstrip("\n").split("\t")
                    out.append((ex, step, int(attempt), int(t0), int(t1), int(pid)))
        return out

    async def duplicates(self, pool: Any, phases: list[str]) -> dict[str, Any]:
        """What the step logs say, per phase: re-invocations, overlaps, spread."""
        rows = await pool.fetch(
            f"SELECT id::text AS id, input->>'phase' AS phase FROM {self.schema}.execution")
        phase_of = {r["id"]: r["phase"] for r in rows}
        worker_of_pid = {p.pid: n for n, p in self.workers.items()}
        by_step: dict[tuple[str, str], list[tuple[int, int, int]]] = defaultdict(list)
        per_worker: dict[str, Counter[str]] = defaultdict(Counter)
        lines = self.step_log()
        for ex, step, _attempt, t0, t1, pid in lines:
            by_step[(ex, step)].append((t0, t1, pid))
            per_worker[phase_of.get(ex, "?")][worker_of_pid.get(pid, str(pid))] += 1
        out: dict[str, Any] = {}
        for phase in [*phases, "?"]:
            keys = [k for k in by_step if phase_of.get(k[0], "?") == phase]
            if not keys and phase == "?":
                continue
            reinvoked = sum(len(by_step[k]) - 1 for k in keys)
            overlapping = 0
            for k in keys:
                ends_by = 0  # the latest end among the invocations started before
                for t0, t1, _ in sorted(by_step[k]):
                    if t0 < ends_by:
                        overlapping += 1
                    ends_by = max(ends_by, t1)
            pids: dict[str, set[int]] = defaultdict(set)
            for ex, step in keys:
                pids[ex].update(p for _, _, p in by_step[(ex, step)])
            out[phase] = {
                "step_invocations": sum(len(by_step[k]) for k in keys),
                "steps": len(keys),
                "step_reinvocations": reinvoked,
                "overlapping_invocations": overlapping,
                "runs_on_several_workers": sum(1 for s in pids.values() if len(s) > 1),
                "step_invocations_per_worker": dict(sorted(per_worker[phase].items())),
            }
        return out

    async def run(self) -> dict[str, Any]:
        import asyncpg

        from hub import Hub
        from hub.runtime.admin import reconcile
        from hub.runtime.topics import load_topics
        from hub.settings import KafkaSettings

        args = self.args
        result: dict[str, Any] = {"workers": self.k, "schema": self.schema,
                                  "topic": self.topic, "group": self.group}
        await reconcile(load_topics(self.topics_file, self.prefix),
                        KafkaSettings(bootstrap=self.bootstrap), self.bootstrap, create=True)
        pool = await asyncpg.create_pool(self.dsn, min_size=1, max_size=2)
        try:
            async with Hub(self.dsn, schema=self.schema, execute=False) as starter:
                t0 = time.perf_counter()
                await self.start_workers()
                result["workers_ready_s"] = round(time.perf_counter() - t0, 3)
                phases: list[str] = []
                if args.warmup:
                    log(f"K={self.k}: warm-up, {args.warmup} events")
                    await self.kafka_phase(pool, "warmup", args.warmup, 0.0)
                    phases.append("warmup")
                if args.events:
                    log(f"K={self.k}: kafka, {args.events} events as fast as possible")
                    result["kafka"] = await self.kafka_phase(pool, "kafka", args.events, 0.0)
                    phases.append("kafka")
                    log(f"K={self.k}: kafka {result['kafka']['steady_workflows_per_s']} "
                        "workflows/s (steady)")
                if args.rate and args.seconds:
                    n = int(args.rate * args.seconds)
                    log(f"K={self.k}: rate, {args.rate:g} events/s for {args.seconds:g} s")
                    result["rate"] = await self.kafka_phase(pool, "rate", n, args.rate)
                    phases.append("rate")
                    log(f"K={self.k}: rate p50 {result['rate']['p50_ms']} ms, "
                        f"p99 {result['rate']['p99_ms']} ms")
                if args.engine_runs:
                    log(f"K={self.k}: engine, {args.engine_runs} runs started in Postgres")
                    result["engine"] = await self.engine_phase(pool, starter, args.engine_runs)
                    phases.append("engine")
                    log(f"K={self.k}: engine {result['engine']['steady_workflows_per_s']} "
                        "workflows/s (steady)")
                result["worker_exit_codes"] = await self.stop_workers()
                result["duplicates"] = await self.duplicates(pool, phases)
                unfinished = await pool.fetchval(
                    f"SELECT count(*) FROM {self.schema}.execution WHERE finished_at IS NULL")
                result["unfinished_executions"] = unfinished
            with contextlib.suppress(asyncpg.PostgresError):
                await pool.execute(f"DROP SCHEMA IF EXISTS {self.schema} CASCADE")
        finally:
            await pool.close()
            await self.children.close()
        return result


def headline(r: dict[str, Any]) -> dict[str, Any]:
    """The headline figures of one run."""
    dup = r.get("duplicates", {})
    s: dict[str, Any] = {
        "step_reinvocations": sum(d["step_reinvocations"] for d in dup.values()),
        "overlapping_invocations": sum(d["overlapping_invocations"] for d in dup.values()),
        "executions_twice": sum(r[p]["executions_twice"] for p in ("kafka", "rate", "engine")
                                if p in r),
        "unfinished": r.get("unfinished_executions"),
    }
    for phase in ("kafka", "engine"):
        if phase in r:
            cpu = r[phase]["cpu"]
            ours = sum(v for n, v in cpu["cpu_s"].items() if n != "others")
            n_runs = r[phase]["finished"]
            s[f"{phase}_workflows_per_s"] = r[phase]["steady_workflows_per_s"]
            s[f"{phase}_overall_workflows_per_s"] = r[phase]["workflows_per_s"]
            s[f"{phase}_cores"] = cpu["cores"]
            s[f"{phase}_cpu_ms_per_workflow"] = {
                "workers": cpu["workers_cpu_ms_per_workflow"],
                "postgres": cpu["postgres_cpu_ms_per_workflow"],
                "all_ours": round(ours * 1000 / n_runs, 3) if n_runs else None}
            # what the machine's cores would do if this run had them to itself and CPU
            # were the only limit (commit waits, a busy neighbour: read the others)
            s[f"{phase}_cpu_bound_ceiling_workflows_per_s"] = (
                round((os.cpu_count() or 1) * n_runs / ours, 1) if ours else None)
    if "rate" in r:
        s["rate_p50_ms"] = r["rate"]["p50_ms"]
        s["rate_p99_ms"] = r["rate"]["p99_ms"]
    if "kafka" in r:
        s["kafka_backlog_p50_ms"] = r["kafka"]["p50_ms"]
        s["kafka_backlog_p99_ms"] = r["kafka"]["p99_ms"]
    return s


def _median(values: list[Any]) -> Any:
    values = [v for v in values if v is not None]
    if not values:
        return None
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return round(statistics.median(values), 3)
    if all(isinstance(v, dict) for v in values):
        keys = set().union(*values)
        return {k: _median([v[k] for v in values if k in v]) for k in sorted(keys)}
    return values[0]


ADDED_UP = ("step_reinvocations", "overlapping_invocations", "executions_twice", "unfinished")
BY_ROUND = ("kafka_workflows_per_s", "engine_workflows_per_s", "rate_p50_ms", "rate_p99_ms")


def summarise(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Per worker count: each figure's median over the rounds (duplicates added up, the main
    figures of every round listed too), and the speed-up over one worker."""
    out: dict[str, Any] = {}
    for k, rounds in runs.items():
        heads = [headline(r) for r in rounds]
        s = {key: (sum(h[key] or 0 for h in heads) if key in ADDED_UP
                   else _median([h[key] for h in heads]))
             for key in heads[0]}
        if len(heads) > 1:
            s["rounds"] = len(heads)
            s["by_round"] = {key: [h.get(key) for h in heads] for key in BY_ROUND}
            for phase in ("kafka", "engine"):
                s["by_round"][f"{phase}_others_cores"] = [
                    h.get(f"{phase}_cores", {}).get("others") for h in heads]
        out[k] = s
    base = out.get("1", {})
    for s in out.values():
        for phase in ("kafka", "engine"):
            key = f"{phase}_workflows_per_s"
            if base.get(key) and s.get(key):
                s[f"{phase}_speedup_vs_1"] = round(s[key] / base[key], 2)
    return out


async def orchestrate(args: argparse.Namespace, dsn: str, bootstrap: str,
                      broker_pid: int | None, tmp: Path) -> dict[str, Any]:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        pg_version = await conn.fetchval("SHOW server_version")
        pg_settings = {k: await conn.fetchval(f"SHOW {k}") for k in (
            "fsync", "synchronous_commit", "max_connections", "track_commit_timestamp")}
    finally:
        await conn.close()
    result: dict[str, Any] = {
        "bench": "scale", "cpus": os.cpu_count(), "cpus_usable": len(os.sched_getaffinity(0)),
        "python": platform.python_version(), "pg_version": pg_version,
        "pg_settings": pg_settings, "partitions": args.partitions,
        "workload": f"{WORKFLOW}: 3 steps without I/O, started by the subscriber of "
                    f"{TOPIC} (wait=False) or directly in Postgres (engine)",
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
    }
    runs: dict[str, list[dict[str, Any]]] = {str(k): [] for k in args.workers}
    for r in range(args.rounds):
        for k in args.workers:  # rounds interleave, so a busy spell hits every K alike
            tag = f"k{k}" if r == 0 else f"k{k}r{r + 1}"
            log(f"K={k}: starting {k} worker(s)" + (f", round {r + 1}" if args.rounds > 1
                                                     else ""))
            run = await Scale(k, tag, args, dsn, bootstrap, broker_pid, tmp / "pgdata",
                              tmp).run()
            runs[str(k)].append({"round": r + 1, **run})
    result["summary"] = summarise(runs)
    result["runs"] = runs
    result["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    result["note"] = (
        f"{os.cpu_count()} cores shared by the workers, Postgres, the broker, the producer and "
        "the machine's other users (cores.others): once they are busy, more workers split the "
        "same CPU; compare cpu_ms_per_workflow across worker counts for the cost of scaling out")
    return result


def remove_socket_dir(dsn: str) -> None:
    """The embedded server leaves its (empty) socket folder /tmp/hub-pg-<hash> behind."""
    host = parse_qs(urlsplit(dsn).query).get("host", [""])[0]
    if host.startswith("/tmp/hub-pg-"):
        with contextlib.suppress(OSError):
            os.rmdir(host)


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--workers", default="1,2,3", help="worker counts to measure, in order")
    ap.add_argument("--rounds", type=int, default=1,
                    help="repeat the worker counts, interleaved; the summary takes medians")
    ap.add_argument("--events", type=int, default=4000, help="kafka phase: events at once")
    ap.add_argument("--rate", type=float, default=200.0, help="rate phase: events/s (0: skip)")
    ap.add_argument("--seconds", type=float, default=10.0, help="rate phase: duration")
    ap.add_argument("--engine-runs", type=int, default=3000, help="engine phase (0: skip)")
    ap.add_argument("--warmup", type=int, default=300)
    ap.add_argument("--partitions", type=int, default=8)
    ap.add_argument("--session-timeout-ms", type=int, default=3000,
                    help="HUB_KAFKA_SESSION_TIMEOUT_MS of the workers (Tansu holds a join for "
                         "half of it)")
    ap.add_argument("--pool-max", type=int, default=None, help="HUB_POOL_MAX of the workers")
    ap.add_argument("--timeout", type=float, default=180.0,
                    help="seconds a phase may take to finish after its last event is sent")
    ap.add_argument("--log-level", default="warning", help="of this process and the workers")
    # internal: the producer subprocess
    ap.add_argument("--producer", metavar="BOOTSTRAP", help=argparse.SUPPRESS)
    ap.add_argument("--topic", help=argparse.SUPPRESS)
    ap.add_argument("--phase", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.producer:
        asyncio.run(produce(args.producer, args.topic, args.phase, args.events, args.rate))
        return
    args.workers = [int(k) for k in args.workers.split(",") if k.strip()]

    from hub.logging import configure_logging
    from hub.runtime.tansu import TansuBroker
    from hub.store.embedded import EmbeddedPostgres

    configure_logging(args.log_level)
    # SIGTERM unwinds like Ctrl-C: workers killed, server and broker stopped, folder removed
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    tmp = Path(tempfile.mkdtemp(prefix="bench_scale_", dir="/tmp"))
    os.chmod(tmp, 0o755)
    (tmp / "topics.yaml").write_text(TOPICS_YAML.format(
        topic=TOPIC, dlq=DEAD_LETTER, partitions=args.partitions))
    server: EmbeddedPostgres | None = None
    broker: TansuBroker | None = None
    dsn = ""
    result: dict[str, Any] | None = None
    try:
        server = EmbeddedPostgres(tmp / "pgdata", settings={"track_commit_timestamp": "on"})
        log(f"starting embedded Postgres in {tmp}")
        dsn = server.start()
        broker = TansuBroker()
        bootstrap = broker.start()  # main thread: the broker dies with this process
        log(f"broker {bootstrap}")
        result = asyncio.run(orchestrate(args, dsn, bootstrap, broker.pid, tmp))
    finally:
        if broker is not None:
            broker.stop()
        if server is not None:
            server.stop()
            remove_socket_dir(dsn)
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
