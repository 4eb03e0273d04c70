"""One embedded Postgres per test session; a schema of its own for every test.

The server lives in a fixed folder (``.hub/test-pg``) so that a run killed half-way leaves a
server the next run reuses and stops, never an orphan in a temporary folder. With
``HUB_DATABASE_URL`` set, tests use that server instead.
"""

from __future__ import annotations

import os
import uuid
import warnings
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
import structlog

from hub import Hub
from hub.sandbox import SandboxControl, SandboxServer
from hub.store.embedded import EmbeddedPostgres

ROOT = Path(__file__).resolve().parent.parent

structlog.configure(
    wrapper_class=structlog.make_filtering_bound_logger(30),
    logger_factory=structlog.PrintLoggerFactory(__import__("sys").stderr),
)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[EmbeddedPostgres | None]:
    if os.environ.get("HUB_DATABASE_URL"):
        yield None
        return
    server = EmbeddedPostgres(ROOT / ".hub" / "test-pg")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def dsn(pg_server: EmbeddedPostgres | None) -> str:
    return pg_server.dsn if pg_server is not None else os.environ["HUB_DATABASE_URL"]


@pytest.fixture
async def schema(dsn: str) -> AsyncIterator[str]:
    """A fresh schema, dropped after the test."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    yield name
    conn = await asyncpg.connect(dsn)
    try:
        # bounded: a process a failed test left behind may still hold the schema's locks
        await conn.execute("SET lock_timeout = '30s'")
        try:
            await conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")
        except asyncpg.LockNotAvailableError:
            warnings.warn(f"schema {name} left behind: still locked by another session",
                          stacklevel=1)
    finally:
        await conn.close()


@pytest.fixture
async def hub(dsn: str, schema: str) -> AsyncIterator[Hub]:
    async with Hub(dsn, schema=schema, lease_seconds=2.0, poll_interval=0.5,
                   hold_timer_seconds=5.0) as h:
        yield h


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """One broker per session: Tansu by default, Apache Kafka with HUB_TEST_BROKER=kafka,
    or the one at HUB_KAFKA_BOOTSTRAP. Tests use topic names of their own."""
    if os.environ.get("HUB_KAFKA_BOOTSTRAP"):
        yield os.environ["HUB_KAFKA_BOOTSTRAP"]
        return
    if os.environ.get("HUB_TEST_BROKER") == "kafka":
        from tests.support.apache_kafka import ApacheKafka

        kafka = ApacheKafka(ROOT / ".hub" / "test-kafka")
        yield kafka.start()
        kafka.stop()
        return
    from hub.runtime.tansu import TansuBroker

    with TansuBroker() as broker:
        yield broker.bootstrap


@pytest.fixture
def prefix() -> str:
    """A topic-name prefix of the test's own."""
    return f"t{uuid.uuid4().hex[:8]}"


def worker_env(dsn: str, schema: str, modules: str, **extra: str) -> dict[str, str]:
    """Environment for a ``hub worker`` subprocess on the test's database and schema."""
    env = dict(os.environ)
    env.update({
        "HUB_DATABASE_URL": dsn,
        "HUB_SCHEMA": schema,
        "HUB_MODULES": modules,
        "PYTHONPATH": str(ROOT),
        # never the checkout's own .hub: a `make dev` running there must not lend its
        # broker (dev-runtime.json) to a test's worker
        "HUB_DATA_DIR": str(ROOT / ".hub" / "test-workers"),
        **extra,
    })
    return env


FAST_CONNECTOR_RETRIES = {
    "RETRY_INITIAL_S": "0.05", "RETRY_MAX_S": "0.5", "BREAKER_RESET_S": "1",
    "BREAKER_FAILURE_THRESHOLD": "3", "TIMEOUT_S": "5",
}


@pytest.fixture(scope="session")
def sandboxes() -> Iterator[SandboxServer]:
    """The four sandbox systems, once per session, on free loopback ports; the connectors
    of every hub the tests open (and of the workers they start) point at them."""
    from hub.sandbox.systems import all_sandboxes

    server = all_sandboxes(seed=7).start_in_thread()
    env = server.connector_env()
    for system in ("STRIPE", "ODOO", "HUBSPOT", "CONTENTFUL"):
        env.update({f"HUB_{system}_{k}": v for k, v in FAST_CONNECTOR_RETRIES.items()})
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield server
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        server.stop_thread()


@pytest.fixture
async def sandbox(sandboxes: SandboxServer) -> AsyncIterator[SandboxControl]:
    """The sandboxes' control client; faults are cleared after the test."""
    async with SandboxControl(sandboxes.control_url) as control:
        await control.clear_faults()
        yield control
        await control.clear_faults()


def broker_session_ms() -> int:
    """Tansu holds a join for half the session timeout; Apache Kafka refuses < 6 s."""
    return 6000 if os.environ.get("HUB_TEST_BROKER") == "kafka" else 2000
