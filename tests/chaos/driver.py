"""The chaos driver: the commerce workload through several ``hub worker`` processes while
workers are SIGKILLed, Postgres and the broker restart and the outside systems misbehave;
then an audit of every event against the database and the sandboxes' own records.

Why: the hub promises that no event is lost, that no effect is applied twice and that every
execution ends (ARCHITECTURE.md, invariants 1-6). Unit tests prove each mechanism alone; this
proves them together, under the faults production brings, with real processes.

Run it::

    python -m tests.chaos                           # 2,000 events, 3 workers, Tansu
    python -m tests.chaos --seed 1234               # replay a run's chaos schedule
    HUB_TEST_BROKER=kafka python -m tests.chaos     # on Apache Kafka (the broker restarts too)
    python -m tests.chaos --no-chaos                # the same workload without faults (baseline)
    pytest -m chaos                                 # tests/chaos/test_chaos.py runs the above

Options: ``--events`` (2,000; not fewer for the default run), ``--workers`` (3), ``--seed``
(random if unset; printed first as ``chaos: seed=N``), ``--kills`` (20), ``--chaos-seconds``
(180: how long faults go on), ``--publish-seconds`` (170: the events arrive at an even pace,
so every fault lands on work in flight), ``--settle-seconds`` (300: the bound, after the faults
stop, for every event to be accounted for; a passing run ends as soon as they are),
``--max-executions`` (100: ``HUB_MAX_EXECUTIONS`` of each worker), ``--hubspot-rate-limit``,
``--log-level`` of the workers (info), ``--keep`` (keep the run folder even on success). A
default run takes 4-5 minutes on a quiet 2-core machine, Apache Kafka's start included.

What it sets up, all its own and all torn down at the end (success, failure, Ctrl-C or
SIGTERM; each worker is its own process group and dies with the driver, even on SIGKILL; a
Postgres left by a SIGKILLed driver is adopted and stopped by the next run):

- an embedded Postgres in ``.hub/chaos-pg`` (never the tests' ``.hub/test-pg``), a fresh
  schema per run, dropped on success (``HUB_DATABASE_URL`` is ignored: the driver must be able
  to restart the server). It listens on a Unix socket in a folder of its own, always on the
  same port, so a restart keeps the workers' DSN;
- a broker: Tansu (in memory), or Apache Kafka with ``HUB_TEST_BROKER=kafka`` (data in the
  run folder; a restart keeps the ports and the data), with the topics of ``topics.yaml``
  under a prefix of the run's own;
- the four sandbox systems, in this process, Odoo stocked for the workload (a write of
  ``qty_available``, Odoo's inventory adjustment), HubSpot's rolling window at 1,000 requests
  per 10 s (``--hubspot-rate-limit``; HubSpot's own limit for private apps, 190, would cap
  the run at ~6 good orders/s: three calls per order);
- ``--workers`` ``hub worker`` processes (executor, scheduler, consumer, outbox relay) with a
  3 s lease and a 1 s poll, the tests' quick connector retries, and client-side rate limits
  sized to the sandboxes (``CONNECTOR_RATES``); logs in ``<run folder>/worker-N.log`` (JSON).

The workload (seeded): ``--events`` ``order.placed`` events keyed by order id, 81% good, 10%
declined by the card (``pm_card_chargeDeclined``), 5% with a total that does not match their
lines, 3% with an out-of-stock SKU (``SKU-OOS``), 1% malformed (half not JSON, half failing the
schema); customers are drawn from a pool, so orders share contacts.

The chaos, while the events flow (seeded; the schedule is printed):

- ``--kills`` times a random worker is SIGKILLed and a new one started;
- Postgres is stopped for a few seconds and started again (same socket and port);
- the broker is restarted (Apache Kafka; Tansu keeps nothing over a restart, so there the
  fault is skipped, and the driver says so);
- sandbox faults for stretches: latency, a 5xx error rate, a burst of 429s, and an outage
  (``down``: the port refuses connections) of one system; then cleared.

The audit, once every event is accounted for or ``--settle-seconds`` after the faults stop,
prints one line::

    chaos summary: seed=… events=… completed=… compensated=… dead_lettered=… lost=…
                   double_effects=… stuck=… worker_kills=… pg_restarts=… broker_restarts=…
                   inconsistent=… …

- ``events``: distinct order events published;
- ``completed``: orders whose ``fulfil-order`` execution succeeded;
- ``compensated``: orders whose execution was rolled back (status ``compensated``);
- ``dead_lettered``: orders in the dead-letter topic with a reason (``hub.errors.stage`` and
  ``hub.errors.exception.message``);
- ``lost``: published orders with neither a final execution nor a dead letter, plus outbox
  events that never arrived (a succeeded order without its ``ship-order`` execution, a
  compensated one without its ``order.failed`` event);
- ``double_effects``: effects applied twice, from the sandboxes' records: more than one
  PaymentIntent, capture or refund for an order (Stripe), more than one sale order created
  for an order or more than one picking holding its stock (Odoo, by natural key; a picking
  the out-of-stock step cancelled itself and made again when re-run is not counted, and is
  reported under ``info``), more than one deal (HubSpot), more than one ``fulfil-order``
  execution;
- ``stuck``: ``fulfil-order`` executions still ``pending``/``running``/``waiting`` at the end
  (``ship-order`` executions wait for the warehouse by design and are not counted);
- ``inconsistent``: orders whose final state disagrees with the systems: a compensated order
  that left a reservation (a picking not cancelled), money held or taken (a PaymentIntent not
  cancelled and not fully refunded; one the card declined holds nothing), a sale order not
  cancelled or a deal not ``closedlost``; a succeeded order without exactly one captured
  PaymentIntent, a confirmed sale order, a reserved picking and a deal; an execution in
  ``compensation_failed`` or ``cancelled``;
- ``worker_kills``, ``pg_restarts``, ``broker_restarts``: the faults injected;
  ``worker_crashes``: workers that died without being killed (restarted, and reported);
  ``unexpected``: good orders that did not succeed, or bad ones that did not fail as designed
  (expected under faults when a step's retries ran out; listed, not a failure);
  ``elapsed_s``: the whole run; ``drain_s``: from the end of the faults until the last event
  was accounted for.

The exit code is 1 when ``lost``, ``double_effects``, ``stuck`` or ``inconsistent`` is not 0
(the offending orders and executions are listed above the summary, and the worker logs are
kept), 2 when the driver itself failed (setup, publishing), 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import json
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeVar

import asyncpg

ROOT = Path(__file__).resolve().parents[2]
PG_FOLDER = ROOT / ".hub" / "chaos-pg"
TOPICS_FILE = ROOT / "topics.yaml"

FAST_CONNECTOR_RETRIES = {
    "RETRY_INITIAL_S": "0.05", "RETRY_MAX_S": "0.5", "BREAKER_RESET_S": "1",
    "BREAKER_FAILURE_THRESHOLD": "3", "TIMEOUT_S": "5",
}
"""As the tests' (tests/conftest.py): connectors retry briefly in process, the engine's step
retries do the rest."""

CONNECTOR_RATES = {
    "HUB_ODOO_RATE_PER_SECOND": "200", "HUB_STRIPE_RATE_PER_SECOND": "100",
    "HUB_HUBSPOT_RATE_PER_SECOND": "30",
}
"""Client-side rate limits per worker, sized to the sandboxes as a deployment sizes them to its
systems. The defaults (20/s, HubSpot 10/s) would bound the run instead of the faults: an order
makes about 12 Odoo calls, so 20/s per worker caps 3 workers at 5 orders/s (2,000 orders in
6.5 minutes before any fault)."""

SYSTEMS = ("stripe", "odoo", "hubspot")
"""The systems ``fulfil-order`` calls, among which faults are drawn."""

STOCK = 1_000_000.0
"""Units on hand per in-stock SKU: the seeded stock would run out within a few hundred orders."""

PRICES = {"SKU-001": 5900, "SKU-002": 8900, "SKU-003": 2450, "SKU-004": 4500,
          "SKU-005": 1990, "SKU-006": 6900, "SKU-007": 14900, "SKU-008": 1400}
"""The sandbox's seeded products, prices in cents."""

MIX = (("declined", 0.10), ("bad_total", 0.05), ("oos", 0.03), ("malformed", 0.01))
"""Shares of the orders designed to fail; the rest are good."""

EXPECTED = {"good": "succeeded", "declined": "compensated", "bad_total": "compensated",
            "oos": "compensated", "malformed": "dead_lettered"}

FINAL = ("succeeded", "compensated", "compensation_failed", "cancelled")

T = TypeVar("T")


def say(message: str) -> None:
    print(message, flush=True)


def clock(at: float | None = None) -> str:
    """UTC wall-clock time as the workers' logs write it, to the millisecond."""
    t = time.time() if at is None else at
    return time.strftime("%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}"


# --- options -------------------------------------------------------------------------------


@dataclass
class Options:
    events: int = 2000
    workers: int = 3
    seed: int | None = None
    kills: int = 20
    chaos_seconds: float = 180.0
    publish_seconds: float = 170.0
    settle_seconds: float = 300.0
    lease_seconds: float = 3.0
    poll_interval: float = 1.0
    broker: str = "tansu"
    log_level: str = "info"
    keep: bool = False
    chaos: bool = True
    hubspot_rate_limit: int = 1000
    max_executions: int = 100


def parse_args(argv: list[str] | None) -> Options:
    defaults = Options()
    p = argparse.ArgumentParser(prog="python -m tests.chaos",
                                description="The chaos suite; see tests/chaos/driver.py.")
    p.add_argument("--events", type=int, default=defaults.events,
                   help="order.placed events (2,000; not fewer for the suite's default run)")
    p.add_argument("--workers", type=int, default=defaults.workers,
                   help="hub worker processes at any time")
    p.add_argument("--seed", type=int, default=None,
                   help="replays a run's workload and chaos schedule (random if unset)")
    p.add_argument("--kills", type=int, default=defaults.kills,
                   help="SIGKILLs of a random worker (each replaced at once)")
    p.add_argument("--chaos-seconds", type=float, default=defaults.chaos_seconds,
                   help="how long the faults go on")
    p.add_argument("--publish-seconds", type=float, default=defaults.publish_seconds,
                   help="the events arrive evenly over this long")
    p.add_argument("--settle-seconds", type=float, default=defaults.settle_seconds,
                   help="bound, after the faults, for every event to be accounted for")
    p.add_argument("--lease-seconds", type=float, default=defaults.lease_seconds,
                   help="HUB_LEASE_SECONDS of the workers")
    p.add_argument("--log-level", default=defaults.log_level,
                   help="the workers' log level (their logs are kept when a run fails)")
    p.add_argument("--keep", action="store_true", help="keep the run folder on success too")
    p.add_argument("--no-chaos", dest="chaos", action="store_false",
                   help="no kills, restarts or faults: the baseline of the same workload")
    p.add_argument("--hubspot-rate-limit", type=int, default=defaults.hubspot_rate_limit,
                   help="requests per 10 s HubSpot's sandbox admits (HubSpot gives "
                        "Professional and Enterprise apps 190)")
    p.add_argument("--max-executions", type=int, default=defaults.max_executions,
                   help="HUB_MAX_EXECUTIONS of each worker")
    a = p.parse_args(argv)
    if a.workers < 1 or a.events < 1:
        p.error("--workers and --events must be at least 1")
    return Options(
        events=a.events, workers=a.workers, seed=a.seed, kills=a.kills,
        chaos_seconds=a.chaos_seconds, publish_seconds=a.publish_seconds,
        settle_seconds=a.settle_seconds, lease_seconds=a.lease_seconds,
        broker="kafka" if os.environ.get("HUB_TEST_BROKER") == "kafka" else "tansu",
        log_level=a.log_level, keep=a.keep, chaos=a.chaos,
        hubspot_rate_limit=a.hubspot_rate_limit, max_executions=a.max_executions)


# --- the workload ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Order:
    id: str
    kind: str
    value: bytes


def workload(n: int, rng: random.Random) -> list[Order]:
    """``n`` orders in a seeded order; the failing kinds in their exact shares."""
    kinds: list[str] = []
    for kind, share in MIX:
        kinds += [kind] * max(1, round(n * share))
    kinds += ["good"] * (n - len(kinds))
    rng.shuffle(kinds)
    skus = sorted(PRICES)
    orders = []
    malformed = 0
    for i, kind in enumerate(kinds):
        oid = f"CHAOS-{i:05d}"
        customer = rng.randrange(300)
        lines = [{"sku": sku, "quantity": rng.randint(1, 3), "unit_price": PRICES[sku]}
                 for sku in rng.sample(skus, rng.randint(1, 3))]
        if kind == "oos":
            lines.append({"sku": "SKU-OOS", "quantity": 1, "unit_price": 999})
        total = sum(line["quantity"] * line["unit_price"] for line in lines)
        if kind == "bad_total":
            total += rng.randint(1, 500)
        event: dict[str, Any] = {
            "schema_version": 1, "id": oid, "customer_email": f"customer{customer}@chaos.example",
            "customer_name": f"Customer {customer}", "currency": "EUR", "lines": lines,
            "total": total,
            "payment_method": "pm_card_chargeDeclined" if kind == "declined" else "pm_card_visa",
        }
        if kind == "malformed":
            malformed += 1
            if malformed % 2:
                value = json.dumps(event).encode()[:40]  # cut short: not JSON
            else:
                event["lines"] = []  # JSON, but the schema wants at least one line
                value = json.dumps(event).encode()
        else:
            value = json.dumps(event).encode()
        orders.append(Order(oid, kind, value))
    return orders


# --- the chaos schedule ---------------------------------------------------------------------


@dataclass(frozen=True)
class Fault:
    at: float
    duration: float
    system: str
    kind: str
    settings: dict[str, Any]


@dataclass
class Schedule:
    kills: list[float] = field(default_factory=list)
    pg_restart: tuple[float, float] | None = None  # (at, seconds down)
    broker_restart: float | None = None
    faults: list[Fault] = field(default_factory=list)

    def describe(self) -> str:
        parts = [f"kills at {', '.join(f'{t:.0f}' for t in self.kills) or '-'} s"]
        if self.pg_restart:
            parts.append(f"postgres down at {self.pg_restart[0]:.0f} s "
                         f"for {self.pg_restart[1]:.1f} s")
        if self.broker_restart is not None:
            parts.append(f"broker restart at {self.broker_restart:.0f} s")
        for f in self.faults:
            parts.append(f"{f.system} {f.kind} at {f.at:.0f} s for {f.duration:.0f} s")
        return "; ".join(parts)


def schedule(options: Options, rng: random.Random) -> Schedule:
    if not options.chaos:
        return Schedule()
    span = options.chaos_seconds
    kills: list[float] = []
    gap = min(2.0, (span - 8) / max(1, options.kills))
    while len(kills) < options.kills:
        t = rng.uniform(4.0, span - 4.0)
        if all(abs(t - k) >= gap for k in kills):
            kills.append(t)
    pg = (rng.uniform(0.25, 0.4) * span, rng.uniform(2.0, 4.0))
    broker = rng.uniform(0.55, 0.7) * span if options.broker == "kafka" else None
    kinds = ["latency", "errors", "burst_429", "down"]
    rng.shuffle(kinds)
    slot = span / len(kinds)
    faults = []
    for i, kind in enumerate(kinds):
        system = rng.choice(SYSTEMS)
        if kind == "latency":
            settings: dict[str, Any] = {"latency_ms": rng.randint(150, 400), "jitter_ms": 200}
            duration = 20.0
        elif kind == "errors":
            settings = {"error_rate": round(rng.uniform(0.15, 0.3), 2), "error_status": 503}
            duration = 20.0
        elif kind == "burst_429":
            settings = {"burst_429": rng.randint(20, 60), "retry_after_s": 1}
            duration = 15.0
        else:
            settings = {"down": True}
            duration = rng.uniform(3.0, 6.0)
        at = i * slot + rng.uniform(2.0, max(2.5, slot - duration - 2.0))
        faults.append(Fault(at, duration, system, kind, settings))
    return Schedule(sorted(kills), pg, broker, faults)


@dataclass
class Request:
    """One request a sandbox served: when it came in and when it was answered (epoch
    seconds, as the workers' log timestamps)."""

    system: str
    arrived: float
    method: str
    path: str
    client: str
    body: bytes = b""
    answered: float | None = None
    status: int | None = None


class RequestLog:
    """ASGI wrapper recording every API request of a sandbox system, outermost (before its
    faults), so an effect found twice can be traced to the requests that made it."""

    def __init__(self, app: Any, system: str, log: list[Request]) -> None:
        from hub.sandbox.system import CONTROL_PREFIX

        self.app, self.system, self.log = app, system, log
        self.control = CONTROL_PREFIX

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"].startswith(self.control):
            await self.app(scope, receive, send)
            return
        client = scope.get("client") or ("", 0)
        entry = Request(self.system, time.time(), scope["method"], scope["path"],
                        f"{client[0]}:{client[1]}")
        self.log.append(entry)

        async def receiving() -> Any:
            message = await receive()
            if message.get("type") == "http.request" and len(entry.body) < 2000:
                entry.body += message.get("body", b"")[:2000]
            return message

        async def sending(message: Any) -> None:
            if message.get("type") == "http.response.start":
                entry.answered, entry.status = time.time(), message.get("status")
            await send(message)

        await self.app(scope, receiving, sending)


def sandboxes(options: Options, log: list[Request]) -> Any:
    """The four sandbox systems, each request logged; HubSpot's rolling window at
    ``--hubspot-rate-limit``."""
    from hub.sandbox.hubspot import HubSpotSandbox
    from hub.sandbox.server import SandboxServer
    from hub.sandbox.systems import SYSTEMS as SANDBOXES

    systems = [HubSpotSandbox(seed=options.seed, rate_limit_max=options.hubspot_rate_limit)
               if cls is HubSpotSandbox else cls(seed=options.seed) for cls in SANDBOXES]
    for system in systems:
        system.app = RequestLog(system.app, system.name, log)
    return SandboxServer(systems)


# --- processes ------------------------------------------------------------------------------


@dataclass
class Worker:
    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    log_file: IO[bytes]
    started: float
    ready: bool = False
    killed: bool = False
    _offset: int = 0

    def check_ready(self) -> bool:
        if not self.ready:
            with open(self.log_path, "rb") as f:
                start = max(0, self._offset - 64)  # a line may straddle two reads
                f.seek(start)
                chunk = f.read()
                self._offset = start + len(chunk)
            self.ready = b'"worker_ready"' in chunk
        return self.ready


def _cwd(proc: Any) -> Path | None:
    try:
        return Path(proc.cwd())
    except Exception:
        return None


def tail(path: Path, lines: int = 25) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 32_000))
            text = f.read().decode("utf-8", "replace")
    except OSError as exc:
        return f"({path}: {exc})"
    return "\n".join(text.splitlines()[-lines:])


class Cluster:
    """Postgres, broker, sandboxes and workers of one run; ``close()`` stops every one."""

    def __init__(self, options: Options, folder: Path, tag: str) -> None:
        self.options = options
        self.folder = folder
        self.tag = tag
        self.schema = f"chaos_{tag}"
        self.prefix = f"chaos{tag}."
        self.group = f"chaos-{tag}"
        self.pg: Any = None
        self.dsn = ""
        self.broker: Any = None
        self.bootstrap = ""
        self.sandboxes: Any = None
        self.workers: list[Worker] = []
        self.retired: list[Worker] = []
        self.crashes: list[Worker] = []
        self._count = 0
        self._env: dict[str, str] = {}
        self.started_at = time.monotonic()
        self.requests: list[Request] = []
        # Brokers die with the *thread* that started them (PR_SET_PDEATHSIG): start and
        # restart them on one thread that lives as long as the run.
        self._lifecycle = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix="chaos-lifecycle")

    async def _on_lifecycle(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._lifecycle, fn)

    # -- start -------------------------------------------------------------------------
    async def start(self) -> None:
        from hub.store.embedded import EmbeddedPostgres

        started = time.monotonic()
        self.pg = EmbeddedPostgres(PG_FOLDER)
        self.dsn = await asyncio.to_thread(self.pg.start)
        await self._drop_old_schemas()
        if self.options.broker == "kafka":
            from tests.support.apache_kafka import ApacheKafka, missing_tools

            missing = missing_tools()
            if missing:
                raise RuntimeError(f"HUB_TEST_BROKER=kafka needs {' and '.join(missing)}")
            self.broker = ApacheKafka(self.folder / "kafka")
        else:
            from hub.runtime.tansu import TansuBroker

            self.broker = TansuBroker()
        self.bootstrap = await self._on_lifecycle(self.broker.start)
        await self._create_topics()
        self.sandboxes = sandboxes(self.options, self.requests).start_in_thread()
        await self._stock_up()
        self._env = self._worker_env()
        say(f"chaos: postgres {PG_FOLDER} schema {self.schema}; {self.options.broker} at "
            f"{self.bootstrap} (topic prefix {self.prefix}); sandboxes at "
            f"{self.sandboxes.control_url}; logs in {self.folder} "
            f"({time.monotonic() - started:.1f} s)")

    async def _drop_old_schemas(self) -> None:
        """Drop what failed runs kept (``chaos_<pid>_...``), unless their driver still runs:
        two runs may share the server."""
        import psutil

        conn = await asyncpg.connect(self.dsn)
        try:
            for row in await conn.fetch("SELECT nspname FROM pg_namespace "
                                        "WHERE nspname LIKE 'chaos\\_%'"):
                pid = row["nspname"].split("_")[1]
                if pid.isdigit() and psutil.pid_exists(int(pid)):
                    continue
                await conn.execute(f'DROP SCHEMA "{row["nspname"]}" CASCADE')
        finally:
            await conn.close()

    async def _create_topics(self) -> None:
        from hub.runtime.admin import reconcile
        from hub.runtime.topics import load_topics
        from hub.settings import KafkaSettings

        topics = load_topics(TOPICS_FILE, self.prefix)
        await reconcile(topics, KafkaSettings(bootstrap=self.bootstrap), self.bootstrap,
                        create=True)

    def partitions(self, *names: str) -> dict[str, int]:
        """``{prefixed name: partitions}`` of topics as topics.yaml declares them."""
        from hub.runtime.topics import load_topics

        declared = load_topics(TOPICS_FILE, self.prefix)
        return {self.prefix + n: declared[self.prefix + n].partitions for n in names}

    async def _stock_up(self) -> None:
        """Enough stock for the run, set as an inventory adjustment through Odoo's API."""
        import httpx

        from hub.sandbox.odoo import API_KEY

        url = self.sandboxes.url("odoo")
        headers = {"Authorization": f"bearer {API_KEY}"}
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=10) as client:
            r = await client.post("/json/2/product.product/search",
                                  json={"domain": [["default_code", "in", sorted(PRICES)]]})
            r.raise_for_status()
            r = await client.post("/json/2/product.product/write",
                                  json={"ids": r.json(), "vals": {"qty_available": STOCK}})
            r.raise_for_status()

    def _worker_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
        env.update(self.sandboxes.connector_env())
        for system in ("STRIPE", "ODOO", "HUBSPOT", "CONTENTFUL"):
            env.update({f"HUB_{system}_{k}": v for k, v in FAST_CONNECTOR_RETRIES.items()})
        env.update(CONNECTOR_RATES)
        session_ms = 6000 if self.options.broker == "kafka" else 2000
        env.update({
            "HUB_DATABASE_URL": self.dsn,
            "HUB_SCHEMA": self.schema,
            "HUB_MODULES": "workflows",
            "HUB_LEASE_SECONDS": str(self.options.lease_seconds),
            "HUB_POLL_INTERVAL": str(self.options.poll_interval),
            "HUB_MAX_EXECUTIONS": str(self.options.max_executions),
            "HUB_KAFKA_BOOTSTRAP": self.bootstrap,
            "HUB_KAFKA_GROUP": self.group,
            "HUB_KAFKA_TOPIC_PREFIX": self.prefix,
            "HUB_KAFKA_TOPICS_FILE": str(TOPICS_FILE),
            "HUB_KAFKA_SESSION_TIMEOUT_MS": str(session_ms),
            "PYTHONPATH": str(ROOT),
        })
        return env

    # -- workers -----------------------------------------------------------------------
    def spawn(self) -> Worker:
        from hub.runtime.tansu import parent_death_preexec

        self._count += 1
        name = f"w{self._count}"
        path = self.folder / f"worker-{self._count}.log"
        log_file = open(path, "wb")  # noqa: SIM115 - closed when the worker is retired
        proc = subprocess.Popen(
            [sys.executable, "-m", "hub", "worker", "--log-level", self.options.log_level,
             "--json-logs"],
            env={**self._env, "HUB_WORKER_ID": f"{self.tag}-{name}"}, cwd=ROOT,
            stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: killpg reaches all of it
            preexec_fn=parent_death_preexec(signal.SIGKILL),  # dies with the driver
        )
        worker = Worker(name, proc, path, log_file, time.monotonic())
        self.workers.append(worker)
        return worker

    async def wait_ready(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while not all(w.check_ready() for w in self.workers):
            for w in self.workers:
                if w.proc.poll() is not None:
                    raise RuntimeError(f"worker {w.name} exited ({w.proc.returncode}) before "
                                       f"it was ready:\n{tail(w.log_path)}")
            if time.monotonic() > deadline:
                raise RuntimeError("workers not ready after "
                                   f"{timeout:.0f} s: {[w.name for w in self.workers]}")
            await asyncio.sleep(0.2)

    def _retire(self, worker: Worker) -> None:
        self.workers.remove(worker)
        self.retired.append(worker)
        worker.log_file.close()

    async def kill(self, worker: Worker) -> None:
        """SIGKILL the worker's whole process group, reap it, start a successor."""
        worker.killed = True
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker.proc.pid, signal.SIGKILL)
        await asyncio.to_thread(worker.proc.wait)
        self._retire(worker)
        self.spawn()

    def reap_crashed(self) -> list[Worker]:
        """Workers that exited on their own: retired, replaced, and returned for the report."""
        crashed = [w for w in self.workers if w.proc.poll() is not None and not w.killed]
        for w in crashed:
            self._retire(w)
            self.crashes.append(w)
            self.spawn()
        return crashed

    # -- restarts ----------------------------------------------------------------------
    async def restart_postgres(self, down_s: float) -> None:
        dsn = self.dsn
        await asyncio.to_thread(self.pg.stop_server)
        await asyncio.sleep(down_s)
        await asyncio.to_thread(self.pg.start_server)
        if self.pg.dsn != dsn:
            raise RuntimeError(f"postgres came back at {self.pg.dsn}, not {dsn}: the "
                               "workers cannot follow")

    async def restart_broker(self) -> None:
        bootstrap = self.bootstrap
        await self._on_lifecycle(self.broker.restart)
        if self.broker.bootstrap != bootstrap:
            raise RuntimeError(f"the broker came back at {self.broker.bootstrap}, not "
                               f"{bootstrap}")

    def cpu_report(self) -> str:
        """CPU seconds (user+system) spent by each kind of process so far: where time goes."""
        import psutil

        def seconds(proc: psutil.Process, *, children: bool = True) -> float:
            try:
                t = proc.cpu_times()
            except psutil.Error:
                return 0.0
            reaped = t.children_user + t.children_system if children else 0.0
            return float(t.user + t.system + reaped)

        # reaped (killed) workers count in this process's children times
        alive = sum(seconds(psutil.Process(w.proc.pid)) for w in self.workers
                    if w.proc.poll() is None)
        mine = psutil.Process().cpu_times()
        workers = alive + mine.children_user + mine.children_system
        me = mine.user + mine.system
        pg = sum(seconds(p) for p in psutil.process_iter(["name"])
                 if p.info["name"] == "postgres" and _cwd(p) == PG_FOLDER.resolve())
        broker_pid = getattr(self.broker, "pid", None)
        broker = 0.0
        if broker_pid:
            with contextlib.suppress(psutil.Error):
                broker = seconds(psutil.Process(broker_pid))
        wall = time.monotonic() - self.started_at
        return (f"cpu seconds: workers {workers:.0f}, driver+sandboxes {me:.0f}, postgres "
                f"{pg:.0f}, broker {broker:.0f} (since its last "
                f"start); wall {wall:.0f} s on {os.cpu_count()} cores; load average "
                f"{os.getloadavg()[0]:.1f}")

    # -- stop --------------------------------------------------------------------------
    async def close(self, *, drop_schema: bool) -> None:
        for w in list(self.workers):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(w.proc.pid, signal.SIGKILL)
        for w in list(self.workers):
            with contextlib.suppress(Exception):
                await asyncio.to_thread(w.proc.wait, 10)
            self._retire(w)
        if self.sandboxes is not None:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self.sandboxes.stop_thread)
        if self.broker is not None:
            with contextlib.suppress(Exception):
                await self._on_lifecycle(self.broker.stop)
        self._lifecycle.shutdown(wait=True)
        if self.pg is not None:
            if drop_schema and self.dsn:
                with contextlib.suppress(Exception):
                    await asyncio.to_thread(self.pg.start_server)
                    conn = await asyncpg.connect(self.dsn)
                    try:
                        await conn.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')
                    finally:
                        await conn.close()
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self.pg.stop)


# --- reading the broker ---------------------------------------------------------------------


@dataclass
class TopicLog:
    """Records of some topics, read from the start by a consumer outside any group."""

    records: dict[str, list[tuple[str, dict[str, str]]]] = field(
        default_factory=lambda: defaultdict(list))  # topic -> [(key, headers)]
    errors: int = 0


async def read_topics(bootstrap: str, topics: dict[str, int], out: TopicLog,
                      stop: asyncio.Event) -> None:
    """Follow ``topics`` (name: partitions, as declared) into ``out``; reconnects (a broker
    restart) resume where it was."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from hub.runtime.consumer import decode_headers

    position: dict[TopicPartition, int] = {}
    while not stop.is_set():
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                    enable_auto_commit=False, auto_offset_reset="earliest")
        try:
            await consumer.start()
            parts = [TopicPartition(topic, p) for topic, n in topics.items() for p in range(n)]
            consumer.assign(parts)
            for tp in parts:
                if tp in position:
                    consumer.seek(tp, position[tp])
                else:
                    await consumer.seek_to_beginning(tp)
            while not stop.is_set():
                batch = await consumer.getmany(timeout_ms=500)
                for tp, records in batch.items():
                    for r in records:
                        position[tp] = r.offset + 1
                        headers = decode_headers(r.headers)
                        key = r.key.decode("utf-8", "replace") if r.key is not None else ""
                        out.records[tp.topic].append((key, headers))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            out.errors += 1
            if out.errors <= 3 or out.errors % 20 == 0:
                say(f"chaos: topic reader reconnecting after {exc!r}")
            await asyncio.sleep(1.0)
        finally:
            with contextlib.suppress(Exception):
                await consumer.stop()


# --- the run --------------------------------------------------------------------------------


@dataclass
class Tally:
    kills: int = 0
    pg_restarts: int = 0
    broker_restarts: int = 0
    faults: int = 0
    published: int = 0
    publish_retries: int = 0
    chaos_done_at: float | None = None


async def publish(cluster: Cluster, orders: list[Order], seconds: float, tally: Tally) -> None:
    """Every order once (re-sent after a broker error: a duplicate finds its execution)."""
    from hub.runtime.kafka import start_producer
    from hub.settings import KafkaSettings

    topic = cluster.prefix + "order.placed"
    settings = KafkaSettings(bootstrap=cluster.bootstrap)
    producer = await start_producer(settings, cluster.bootstrap)
    try:
        started = time.monotonic()
        step = 0.1
        per_step = max(1, round(len(orders) * step / max(seconds, step)))
        for i in range(0, len(orders), per_step):
            chunk = orders[i:i + per_step]
            pending = list(chunk)
            deadline = time.monotonic() + 180
            while pending:
                futures = [await producer.send(topic, o.value, key=o.id.encode(),
                                               headers=[("schema-version", b"1")])
                           for o in pending]
                results = await asyncio.gather(*futures, return_exceptions=True)
                failed = [o for o, r in zip(pending, results, strict=True)
                          if isinstance(r, BaseException)]
                if failed:
                    tally.publish_retries += len(failed)
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"could not publish for 180 s: {results[0]!r}")
                    await asyncio.sleep(0.5)
                pending = failed
            tally.published += len(chunk)
            target = started + (i + per_step) * step / per_step
            await asyncio.sleep(max(0.0, target - time.monotonic()))
    finally:
        await producer.stop()


async def chaos(cluster: Cluster, plan: Schedule, rng: random.Random, tally: Tally,
                t0: float) -> None:
    from hub.sandbox import SandboxControl

    async def at(t: float) -> None:
        await asyncio.sleep(max(0.0, t0 + t - time.monotonic()))

    def stamp() -> str:
        return f"[{time.monotonic() - t0:6.1f}s {clock()}]"

    async def kills() -> None:
        for t in plan.kills:
            await at(t)
            live = [w for w in cluster.workers if w.proc.poll() is None]
            if not live:
                continue
            victim = rng.choice(live)
            await cluster.kill(victim)
            tally.kills += 1
            say(f"chaos: {stamp()} SIGKILL {victim.name} (pid {victim.proc.pid}, "
                f"{'ready' if victim.ready else 'starting'}); kill {tally.kills}")

    async def postgres() -> None:
        if plan.pg_restart is None:
            return
        t, down = plan.pg_restart
        await at(t)
        say(f"chaos: {stamp()} postgres stopping for {down:.1f} s")
        await cluster.restart_postgres(down)
        tally.pg_restarts += 1
        say(f"chaos: {stamp()} postgres up again")

    async def broker() -> None:
        if plan.broker_restart is None:
            return
        await at(plan.broker_restart)
        say(f"chaos: {stamp()} broker restarting")
        await cluster.restart_broker()
        tally.broker_restarts += 1
        say(f"chaos: {stamp()} broker up again")

    async def faults() -> None:
        async with SandboxControl(cluster.sandboxes.control_url) as control:
            for f in plan.faults:
                await at(f.at)
                await control.set_faults(f.system, **f.settings)
                tally.faults += 1
                say(f"chaos: {stamp()} {f.system}: {f.kind} {f.settings}")
                await asyncio.sleep(f.duration)
                await control.clear_faults(f.system)
                say(f"chaos: {stamp()} {f.system}: faults cleared")

    await asyncio.gather(kills(), postgres(), broker(), faults())


async def supervise(cluster: Cluster, stop: asyncio.Event) -> None:
    """Replace workers that die on their own (a crash is a finding, reported at the end)."""
    while not stop.is_set():
        for w in cluster.reap_crashed():
            say(f"chaos: worker {w.name} exited by itself with {w.proc.returncode}; "
                f"restarted. Its log:\n{tail(w.log_path, 15)}")
        for w in cluster.workers:
            w.check_ready()
        await asyncio.sleep(0.5)


# --- the audit ------------------------------------------------------------------------------


@dataclass
class Audit:
    executions: dict[str, list[dict[str, Any]]]  # order id -> fulfil-order rows
    ship_orders: set[str]
    dead: dict[str, list[dict[str, str]]]  # order id -> dead letters
    failed_events: set[str]  # order ids with an order.failed event

    def final(self, oid: str) -> str | None:
        rows = self.executions.get(oid) or []
        statuses = [r["status"] for r in rows if r["status"] in FINAL]
        return statuses[0] if statuses else None


async def snapshot(cluster: Cluster, topics: TopicLog) -> Audit:
    conn = await asyncpg.connect(cluster.dsn, timeout=10)
    try:
        rows = await conn.fetch(
            f"SELECT id::text, transaction_id, status, error, created_at, finished_at "
            f"FROM {cluster.schema}.execution WHERE workflow = 'fulfil-order'")
        ships = await conn.fetch(
            f"SELECT transaction_id FROM {cluster.schema}.execution "
            f"WHERE workflow = 'ship-order'")
    finally:
        await conn.close()
    executions: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        executions[r["transaction_id"].removeprefix("order.placed:")].append(dict(r))
    dead: dict[str, list[dict[str, str]]] = defaultdict(list)
    for key, headers in topics.records[cluster.prefix + "order.placed.dlq"]:
        dead[key].append(headers)
    failed = {key for key, _ in topics.records[cluster.prefix + "order.failed"]}
    return Audit(dict(executions), {r["transaction_id"].removeprefix("ship-order:")
                                    for r in ships}, dict(dead), failed)


def _has_reason(letters: list[dict[str, str]]) -> bool:
    return any(h.get("hub.errors.stage") and h.get("hub.errors.exception.message")
               for h in letters)


def accounted(audit: Audit, orders: list[Order]) -> tuple[list[str], list[str], list[str]]:
    """(unaccounted order ids, stuck execution ids, outbox events missing)."""
    unaccounted = [o.id for o in orders
                   if audit.final(o.id) is None and not _has_reason(audit.dead.get(o.id, []))]
    stuck = [r["id"] for rows in audit.executions.values() for r in rows
             if r["status"] not in FINAL]
    missing = []
    for o in orders:
        status = audit.final(o.id)
        if status == "succeeded" and o.id not in audit.ship_orders:
            missing.append(f"{o.id}: succeeded, but no ship-order execution (order.confirmed "
                           "not published or not consumed)")
        if status == "compensated" and o.id not in audit.failed_events:
            missing.append(f"{o.id}: compensated, but no order.failed event")
    return unaccounted, stuck, missing


ERP = {"pickings": ("stock.picking", "origin"), "sale_orders": ("sale.order", "client_order_ref")}
"""The Odoo records an order leaves: the sandbox's state shows one per order (by natural key);
where more were created, all of them are read through Odoo's API."""


async def erp_records(cluster: Cluster, odoo: dict[str, Any]) -> dict[str, dict[str, list[Any]]]:
    """``{"pickings": {order: [record, ...]}, "sale_orders": {...}}``, every record of every
    order, with its name and (computed) state."""
    import httpx

    from hub.sandbox.odoo import API_KEY

    out: dict[str, dict[str, list[Any]]] = {}
    headers = {"Authorization": f"bearer {API_KEY}"}
    async with httpx.AsyncClient(base_url=cluster.sandboxes.url("odoo"), headers=headers,
                                 timeout=60) as client:
        for kind, (model, key) in ERP.items():
            by_order: dict[str, list[Any]] = {k: [v] for k, v in odoo[kind].items()}
            again = [k for k, n in odoo["creates"].get(model, {}).items() if n > 1]
            if again:
                r = await client.post(f"/json/2/{model}/search_read", json={
                    "domain": [[key, "in", again]], "fields": [key, "name", "state"]})
                r.raise_for_status()
                for k in again:
                    by_order[k] = []
                for rec in r.json():
                    by_order[rec[key]].append(rec)
            out[kind] = by_order
    return out


def check_systems(audit: Audit, orders: list[Order], stripe: dict[str, Any],
                  erp: dict[str, dict[str, list[Any]]], odoo: dict[str, Any],
                  hubspot: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(double effects, inconsistencies), one line per finding, naming order and execution.

    A picking cancelled by the step that made it (out of stock) and made again by a re-run
    of that step is no double effect; two that are not cancelled are (stock reserved twice).
    """
    doubles: list[str] = []
    wrong: list[str] = []
    intents = stripe["payment_intents"]
    counts = stripe["counts"]
    refunded: Counter[str] = Counter()
    for refund in stripe["refunds"].values():
        if refund.get("status") == "succeeded":
            refunded[refund["payment_intent"]] += int(refund["amount"])
    sales_created = odoo["creates"].get("sale.order", {})
    deals_created = hubspot["creates"].get("deals", {})
    for o in orders:
        rows = audit.executions.get(o.id, [])
        ex = ",".join(r["id"] for r in rows) or "-"
        who = f"{o.id} ({o.kind}, execution {ex})"
        pis = stripe["by_order"].get(o.id, [])
        # a picking per order line (its origin: "<order>/<sku>"): a double is two live
        # pickings for one line, never one each for two lines
        by_line = {ref: pks for ref, pks in erp["pickings"].items()
                   if ref == o.id or ref.startswith(f"{o.id}/")}
        pickings = [pk for pks in by_line.values() for pk in pks]
        live = [pk for pk in pickings if pk["state"] != "cancel"]
        live_by_line = {ref: [pk for pk in pks if pk["state"] != "cancel"]
                        for ref, pks in by_line.items()}
        sales = erp["sale_orders"].get(o.id, [])
        if len(rows) > 1:
            doubles.append(f"{who}: {len(rows)} fulfil-order executions")
        if len(pis) > 1:
            doubles.append(f"{who}: {len(pis)} PaymentIntents {pis}")
        for pi in pis:
            c = counts.get(pi, {})
            if c.get("captures", 0) > 1:
                doubles.append(f"{who}: PaymentIntent {pi} captured {c['captures']} times")
            if c.get("refunds", 0) > 1:
                doubles.append(f"{who}: PaymentIntent {pi} refunded {c['refunds']} times")
        if sales_created.get(o.id, 0) > 1:
            doubles.append(f"{who}: {sales_created[o.id]} sale orders created "
                           f"{[(so['name'], so['state']) for so in sales]}")
        for ref, line_live in live_by_line.items():
            if len(line_live) > 1:
                doubles.append(f"{who}: {len(line_live)} pickings reserve the stock of "
                               f"{ref} {[(pk['name'], pk['state']) for pk in line_live]}")
        if deals_created.get(o.id, 0) > 1:
            doubles.append(f"{who}: {deals_created[o.id]} deals created")

        status = audit.final(o.id)
        deal = hubspot["deals"].get(o.id)
        if status in ("compensation_failed", "cancelled"):
            wrong.append(f"{who}: execution ended {status}: "
                         f"{json.dumps(rows[0].get('error'))[:300]}")
        elif status == "compensated":
            for pk in live:
                wrong.append(f"{who}: compensated, picking {pk['name']} is {pk['state']} "
                             "(a reservation left)")
            for so in sales:
                if so["state"] != "cancel":
                    wrong.append(f"{who}: compensated, sale order {so['name']} is "
                                 f"{so['state']}")
            if deal is not None and deal["stage"] != "closedlost":
                wrong.append(f"{who}: compensated, deal {deal['id']} is in {deal['stage']}")
            for pi in pis:
                intent = intents[pi]
                held = intent["amount_capturable"]
                taken = intent["amount_received"] - refunded[pi]
                if intent["status"] == "canceled" or (held == 0 and taken == 0 and intent[
                        "status"] in ("requires_payment_method", "succeeded")):
                    continue
                wrong.append(f"{who}: compensated, PaymentIntent {pi} is {intent['status']} "
                             f"(held {held}, taken and not refunded {taken})")
        elif status == "succeeded":
            captured = [pi for pi in pis if intents[pi]["status"] == "succeeded"
                        and counts.get(pi, {}).get("captures", 0) == 1 and refunded[pi] == 0]
            if len(captured) != 1:
                wrong.append(f"{who}: succeeded, but PaymentIntents "
                             f"{[(pi, intents[pi]['status']) for pi in pis]} "
                             "are not one captured payment")
            if [so["state"] for so in sales] != ["sale"]:
                wrong.append(f"{who}: succeeded, sale orders "
                             f"{[(so['name'], so['state']) for so in sales]} are not one "
                             "confirmed order")
            if not live_by_line or any([pk["state"] for pk in line_live] != ["assigned"]
                                       for line_live in live_by_line.values()):
                wrong.append(f"{who}: succeeded, pickings "
                             f"{[(pk['name'], pk['state']) for pk in pickings]} are not one "
                             "reservation per line")
            if deal is None or deal["stage"] == "closedlost":
                wrong.append(f"{who}: succeeded, deal is "
                             f"{deal['stage'] if deal else 'missing'}")
    return doubles, wrong


def evidence(cluster: Cluster, audit: Audit, order_ids: list[str]) -> list[str]:
    """For each order: its execution's claims (worker logs), the records the sandbox keeps
    for it, and every sandbox request that named it, in time order."""
    from hub.sandbox.odoo import _picking_state

    executions = {r["id"]: oid for oid in order_ids for r in audit.executions.get(oid, [])}
    claims: dict[str, list[str]] = defaultdict(list)
    for w in cluster.retired + cluster.workers:
        with contextlib.suppress(OSError), open(w.log_path, errors="replace") as f:
            for line in f:
                if '"execution_id"' not in line:
                    continue
                with contextlib.suppress(ValueError):
                    rec = json.loads(line)
                    if rec.get("execution_id") in executions:
                        fields = {k: v for k, v in rec.items() if k in (
                            "epoch", "step", "attempt", "status", "error")}
                        claims[rec["execution_id"]].append(
                            f"{rec.get('timestamp', '')[11:23]} {w.name} {rec['event']} "
                            f"{json.dumps(fields)[:200]}")
    orm = cluster.sandboxes.systems["odoo"].orm
    out: list[str] = []
    for oid in order_ids:
        out.append(f"== {oid}")
        for ex, o in executions.items():
            if o == oid:
                out.append(f"execution {ex}:")
                out += [f"  {c}" for c in sorted(claims[ex])]
        for model, key in (("stock.picking", "origin"), ("sale.order", "client_order_ref")):
            for rec in orm.tables[model].values():
                if rec.get(key) == oid:
                    state = (_picking_state(orm, rec) if model == "stock.picking"
                             else rec.get("state"))
                    out.append(f"odoo {model} {rec['id']} {rec.get('name')} state {state} "
                               f"created {rec.get('create_date')}")
        needle = oid.encode()
        for r in cluster.requests:
            if needle in r.body or oid in r.path:
                answered = clock(r.answered) if r.answered else "never answered"
                out.append(f"{clock(r.arrived)} -> {answered} {r.system} {r.method} {r.path} "
                           f"from {r.client}: {r.status} {r.body[:150]!r}")
    return out


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(options: Options) -> int:
    if options.seed is None:
        options.seed = random.SystemRandom().randrange(1, 1_000_000)
    say(f"chaos: seed={options.seed}")
    rng = random.Random(options.seed)
    orders = workload(options.events, rng)
    plan = schedule(options, rng)
    kinds = Counter(o.kind for o in orders)
    say(f"chaos: {options.events} events ({', '.join(f'{k} {n}' for k, n in kinds.items())}), "
        f"{options.workers} workers, broker {options.broker}, lease "
        f"{options.lease_seconds} s; faults for {options.chaos_seconds:.0f} s: "
        f"{plan.describe() if options.chaos else 'none (--no-chaos)'}")
    if options.chaos and options.broker != "kafka":
        say("chaos: broker restart skipped: Tansu keeps its data in memory, a restart would "
            "lose every topic (HUB_TEST_BROKER=kafka restarts Apache Kafka, which keeps it)")
    tag = f"{os.getpid()}_{options.seed}_{uuid.uuid4().hex[:4]}"
    folder = Path(tempfile.mkdtemp(prefix=f"hub-chaos-{options.seed}-"))
    cluster = Cluster(options, folder, tag)
    tally = Tally()
    topics = TopicLog()
    stop = asyncio.Event()
    background: list[asyncio.Task[None]] = []
    passed = False
    t_start = time.monotonic()
    try:
        await cluster.start()
        background.append(asyncio.create_task(read_topics(
            cluster.bootstrap, cluster.partitions("order.placed.dlq", "order.failed"),
            topics, stop)))
        for _ in range(options.workers):
            cluster.spawn()
        await cluster.wait_ready()
        say(f"chaos: {options.workers} workers ready ({time.monotonic() - t_start:.1f} s "
            "since start)")
        background.append(asyncio.create_task(supervise(cluster, stop)))
        t0 = time.monotonic()
        publisher = asyncio.create_task(publish(cluster, orders, options.publish_seconds,
                                                tally))
        chaos_task = asyncio.create_task(chaos(cluster, plan, rng, tally, t0))
        progress = asyncio.create_task(report_progress(cluster, topics, orders, tally, t0))
        background.append(progress)
        await asyncio.gather(publisher, chaos_task)
        tally.chaos_done_at = time.monotonic()
        say(f"chaos: [{tally.chaos_done_at - t0:6.1f}s] faults over ({tally.kills} kills, "
            f"{tally.pg_restarts} postgres and {tally.broker_restarts} broker restarts, "
            f"{tally.faults} sandbox faults); {tally.published} events published; waiting up "
            f"to {options.settle_seconds:.0f} s for every event to be accounted for")

        deadline = tally.chaos_done_at + options.settle_seconds
        drained_at: float | None = None
        while True:
            try:
                audit = await snapshot(cluster, topics)
            except (OSError, asyncpg.PostgresError) as exc:
                say(f"chaos: database not readable yet: {exc!r}")
                await asyncio.sleep(2.0)
                continue
            unaccounted, stuck, missing = accounted(audit, orders)
            if not unaccounted and not stuck and not missing:
                drained_at = time.monotonic()
                break
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(2.0)
        progress.cancel()

        from hub.sandbox import SandboxControl

        async with SandboxControl(cluster.sandboxes.control_url, timeout_s=120) as control:
            stripe = await control.state("stripe")
            odoo = await control.state("odoo")
            hubspot = await control.state("hubspot")
        erp = await erp_records(cluster, odoo)
        doubles, wrong = check_systems(audit, orders, stripe, erp, odoo, hubspot)
        status_of = {o.id: audit.final(o.id) for o in orders}
        completed = sum(1 for s in status_of.values() if s == "succeeded")
        compensated = sum(1 for s in status_of.values() if s == "compensated")
        dead_lettered = sum(1 for o in orders if status_of[o.id] is None
                            and _has_reason(audit.dead.get(o.id, [])))
        unexpected = []
        for o in orders:
            got = status_of[o.id] or ("dead_lettered" if o.id in audit.dead else "nothing")
            if got != EXPECTED[o.kind]:
                rows = audit.executions.get(o.id, [])
                reason = json.dumps(rows[0].get("error"))[:200] if rows else ""
                unexpected.append(f"{o.id} ({o.kind}) {got} {reason}")
        lost = len(unaccounted) + len(missing)
        durations = [(r["finished_at"] - r["created_at"]).total_seconds()
                     for rows in audit.executions.values() for r in rows
                     if r["finished_at"] is not None]
        last_final = max((r["finished_at"] for rows in audit.executions.values() for r in rows
                          if r["finished_at"] is not None), default=None)

        findings: list[str] = []
        for title, items in (("lost (no final execution, no dead letter)", unaccounted),
                             ("outbox events missing", missing),
                             ("stuck executions", stuck),
                             ("double effects", doubles), ("inconsistent", wrong),
                             ("unexpected outcomes (not a failure)", unexpected)):
            if items:
                findings += [f"{title}: {len(items)}", *(f"  {item}" for item in items)]
                say(f"chaos: {title}: {len(items)}")
                for item in items[:40]:
                    say(f"  {item}")
                if len(items) > 40:
                    say(f"  ... and {len(items) - 40} more (all in {folder / 'findings.txt'})")
        if findings:
            (folder / "findings.txt").write_text("\n".join(findings) + "\n")
        dup_partners = sum(1 for n in odoo["creates"].get("res.partner", {}).values() if n > 1)
        remade = sum(1 for n in odoo["creates"].get("stock.picking", {}).values() if n > 1)
        stripe_requests = sum(stripe["requests"].values()) if stripe.get("requests") else 0
        letters = sum(len(v) for v in audit.dead.values())
        failed_events = topics.records[cluster.prefix + "order.failed"]
        say(f"chaos: info: {len(cluster.crashes)} worker crashes; {tally.publish_retries} "
            f"publish retries; {letters} dead letters for {len(audit.dead)} orders; "
            f"{len(failed_events)} order.failed events for {len(audit.failed_events)} orders; "
            f"{len(audit.ship_orders)} ship-order executions; {stripe['idempotent_replays']} "
            f"Stripe idempotent replays ({stripe_requests} requests); HubSpot rate-limited "
            f"{hubspot['rate_limited']} times; {remade} orders whose picking was made again "
            f"after the first was cancelled (a re-run out-of-stock step); {dup_partners} "
            f"customers with two or more Odoo partners (concurrent orders of one customer: "
            f"find-or-create races, not an order's effect doubled)")
        say(f"chaos: info: fulfil-order start-to-end p50 {percentile(durations, 0.5):.1f} s, "
            f"p99 {percentile(durations, 0.99):.1f} s, max {max(durations, default=0):.1f} s; "
            f"last final at {last_final}")
        say(f"chaos: info: {cluster.cpu_report()}")
        elapsed = time.monotonic() - t_start
        drain = (drained_at - tally.chaos_done_at) if drained_at else float("nan")
        say(f"chaos summary: seed={options.seed} events={len(orders)} completed={completed} "
            f"compensated={compensated} dead_lettered={dead_lettered} lost={lost} "
            f"double_effects={len(doubles)} stuck={len(stuck)} worker_kills={tally.kills} "
            f"pg_restarts={tally.pg_restarts} broker_restarts={tally.broker_restarts} "
            f"inconsistent={len(wrong)} worker_crashes={len(cluster.crashes)} "
            f"unexpected={len(unexpected)} broker={options.broker} "
            f"elapsed_s={elapsed:.0f} drain_s={drain:.0f}")
        passed = lost == 0 and not doubles and not stuck and not wrong
        if doubles:
            doubled = list(dict.fromkeys(d.split()[0] for d in doubles))
            lines = evidence(cluster, audit, doubled)
            (folder / "double-effects.txt").write_text("\n".join(lines) + "\n")
            say(f"chaos: evidence of the double effects in {folder / 'double-effects.txt'}; "
                "the first:")
            first = lines.index(f"== {doubled[1]}") if len(doubled) > 1 else len(lines)
            for line in lines[:first][:60]:
                say(f"  {line}")
        if not passed:
            say(f"chaos: FAILED; worker logs kept in {folder}, database schema "
                f"{cluster.schema} kept in {PG_FOLDER} (until the next run)")
            for w in cluster.retired[-3:] + cluster.workers:
                say(f"--- {w.log_path.name} ({w.name}) ---\n{tail(w.log_path, 10)}")
        return 0 if passed else 1
    finally:
        stop.set()
        for task in background:
            task.cancel()
        for task in background:
            with contextlib.suppress(BaseException):
                await task
        await cluster.close(drop_schema=passed)
        if passed and not options.keep:
            shutil.rmtree(folder, ignore_errors=True)


async def report_progress(cluster: Cluster, topics: TopicLog, orders: list[Order],
                          tally: Tally, t0: float) -> None:
    while True:
        await asyncio.sleep(10.0)
        try:
            conn = await asyncpg.connect(cluster.dsn, timeout=5)
            try:
                rows = await conn.fetch(
                    f"SELECT status, count(*) AS n FROM {cluster.schema}.execution "
                    "WHERE workflow = 'fulfil-order' GROUP BY status")
            finally:
                await conn.close()
            statuses = ", ".join(f"{r['status']} {r['n']}" for r in rows)
        except Exception as exc:
            statuses = f"database unreachable ({type(exc).__name__})"
        dlq = len({k for k, _ in topics.records[cluster.prefix + "order.placed.dlq"]})
        live = sum(1 for w in cluster.workers if w.proc.poll() is None)
        say(f"chaos: [{time.monotonic() - t0:6.1f}s] published {tally.published}/{len(orders)}; "
            f"fulfil-order: {statuses or 'none yet'}; dead letters {dlq}; workers {live} "
            f"live; kills {tally.kills}")


def _quiet_disconnects(record: logging.LogRecord) -> bool:
    """Drop the sandboxes' tracebacks for requests whose client went away (a killed worker,
    a connector timeout): expected here, and hundreds of lines each."""
    exc = record.exc_info[1] if record.exc_info else None
    return type(exc).__name__ != "ClientDisconnect"


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30),
                        logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    logging.getLogger("uvicorn.error").addFilter(_quiet_disconnects)

    async def guarded() -> int:
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        return await run(options)

    try:
        return asyncio.run(guarded())
    except (KeyboardInterrupt, asyncio.CancelledError):
        say("chaos: interrupted; everything it started is stopped")
        return 130
    except Exception as exc:
        import traceback

        traceback.print_exc()
        say(f"chaos: the driver failed: {exc!r}")
        return 2

