"""The only caller of ``queries.py``: a pool, migrations, and one method per durable operation.

A passing disconnect (Postgres restarting, a broken socket) is retried with backoff instead of
failing the execution: pausing is always safer than losing a checkpoint. Every write that
advances an execution is guarded by the lease epoch, so a retried write is harmless.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import urllib.parse
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, Literal, TypeVar

import asyncpg
import structlog

from hub.errors import StoreError
from hub.settings import SCHEMA_PATTERN, Retention
from hub.store import queries as q

log = structlog.get_logger(__name__)

T = TypeVar("T")

Row = dict[str, Any]
"""An execution row, jsonb columns decoded."""

_DISCONNECTS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.InterfaceError,
    # a connection left mid-protocol by a server restart ("cannot switch to state ...;
    # another operation is in progress"): unusable, a fresh one from the pool works
    asyncpg.InternalClientError,
    asyncpg.TooManyConnectionsError,
    ConnectionError,
    OSError,
)


_CLOSE_ERRORS: tuple[type[BaseException], ...] = (TimeoutError, *_DISCONNECTS)


_TRANSIENT_STATES = frozenset({"40P01", "40001", "57P01", "57P02", "57P03"})
"""Deadlock, serialization failure, and the server shutting down or starting: retry."""


def is_disconnect(exc: BaseException) -> bool:
    """True for errors that retrying cures (as opposed to a bad statement)."""
    if isinstance(exc, _DISCONNECTS):
        return True
    return getattr(exc, "sqlstate", None) in _TRANSIENT_STATES


def is_data_error(exc: BaseException) -> bool:
    """True when a statement failed on what a row holds (text Postgres cannot store, a value
    out of range), not on the connection: shared statements are then retried row by row,
    so only the bad row fails."""
    return isinstance(exc, asyncpg.DataError | UnicodeError) or (
        getattr(exc, "sqlstate", "") or "").startswith("22")


_SCHEMA_RE = re.compile(SCHEMA_PATTERN)


@dataclass(frozen=True)
class AuditRecord:
    """An operator action (who, through what, what), written in the transaction of its
    effect. ``detail`` is JSON text."""

    actor_id: str | None
    actor_name: str
    via: str
    action: str
    target: str | None = None
    detail: str = "{}"


@dataclass(frozen=True)
class WebhookDelivery:
    """A signed delivery's id, recorded with its signal so it is accepted once: who sent it
    (``source``), its ``webhook-id``, the SHA-256 of its body, and how long to keep the id."""

    source: str
    id: str
    digest: str
    keep_s: float


@dataclass(frozen=True, slots=True)
class StartRow:
    id: uuid.UUID
    workflow: str
    version: str
    transaction_id: str
    input: str
    trigger: str | None
    keep: bool
    owner: str | None
    status: str = "pending"
    steps: str = "{}"


@dataclass(frozen=True, slots=True)
class CheckpointRow:
    id: uuid.UUID
    epoch: int
    status: str
    phase: str
    steps: str
    result: str | None
    error: str | None
    hold: bool
    due_s: float | None
    finished: bool
    retain_s: float | None
    events: str | None
    outbox: str | None = None
    calls: str | None = None  # the connector calls of the attempts it records (lineage)
    seen: int = 0  # the highest signal id this execution's worker has applied


@dataclass(frozen=True, slots=True)
class ItemRow:
    """One fan-out item's state as written (jsonb values already encoded as text)."""

    execution_id: uuid.UUID
    step: str
    idx: int
    epoch: int
    state: str
    attempts: int
    comp_attempts: int
    seq: int | None
    output: str | None
    compensate_input: str | None
    error: str | None

    @property
    def key(self) -> tuple[uuid.UUID, str, int]:
        return (self.execution_id, self.step, self.idx)


@dataclass(frozen=True, slots=True)
class OutboxFate:
    """What publishing one claimed row came to: ``sent``; ``retry`` (worth another attempt
    later); ``failed`` (no attempt can succeed: it waits for an operator). ``error`` says
    why, for the row's ``last_error``."""

    id: uuid.UUID
    fate: Literal["sent", "retry", "failed"]
    error: str | None = None


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How the outbox retries a row: ``backoff_s * 2**attempts`` capped at
    ``backoff_max_s``, and failed after ``max_attempts``."""

    max_attempts: int = 20
    backoff_s: float = 1.0
    backoff_max_s: float = 300.0


async def _no_reset(conn: asyncpg.Connection) -> None:
    """The hub keeps no session state on pooled connections (no LISTEN, no advisory session
    locks, no SET), so asyncpg's reset query on every release would be a wasted round trip."""


_REFUSALS = (asyncpg.InvalidAuthorizationSpecificationError, asyncpg.InvalidPasswordError,
             asyncpg.InvalidCatalogNameError)
"""What a reachable server answers when the DSN is wrong: retrying cannot help."""


def _budget(attempts: int) -> float:
    """About how long ``retry`` waits over ``attempts`` (its backoff doubles to 2 s)."""
    return float(sum(min(0.05 * 2.0 ** i, 2.0) for i in range(attempts - 1)))


def _decode_row(rec: asyncpg.Record) -> Row:
    return dict(rec.items())


class Store:
    """Postgres access for one hub schema."""

    def __init__(self, dsn: str, schema: str = "hub", *, min_size: int = 2,
                 max_size: int = 10) -> None:
        if not _SCHEMA_RE.match(schema):
            raise StoreError(f"schema name {schema!r} must match {_SCHEMA_RE.pattern}")
        self.dsn = dsn
        self.schema = schema
        self.channel = f"hub_{schema}"
        self._min = min_size
        self._max = max_size
        self._pool: asyncpg.Pool | None = None
        self._sql: dict[str, str] = {}
        self.statements = 0

    # -- lifecycle -----------------------------------------------------------------------
    async def connect(self) -> None:
        """Open the pool. An unreachable server is waited for (about 30 s, said once); a
        server that refuses (wrong role, password or database) is one clear StoreError."""
        try:
            self._pool = await self.retry(
                lambda: asyncpg.create_pool(
                    self.dsn, min_size=self._min, max_size=self._max, init=self._init_conn,
                    command_timeout=60, reset=_no_reset,
                ),
                what="connect",
                attempts=20,
            )
        except _REFUSALS as exc:
            raise StoreError(
                f"Postgres at {self.where} refused the connection: {exc} (check the user, "
                "password and database of HUB_DATABASE_URL)") from None
        except StoreError as exc:
            raise StoreError(f"Postgres at {self.where} is unreachable: "
                             f"{str(exc).split(': ', 1)[-1]}") from None

    @property
    def where(self) -> str:
        """host:port/database of the DSN, never its user or password (errors and logs)."""
        try:
            parts = urllib.parse.urlsplit(self.dsn)
            query = urllib.parse.parse_qs(parts.query)
            host = parts.hostname or (query.get("host") or ["localhost"])[0]
            port = parts.port or (query.get("port") or ["5432"])[0]
        except ValueError:
            return "the configured server"
        return f"{host}:{port}{parts.path or '/'}"

    @staticmethod
    async def _init_conn(conn: asyncpg.Connection) -> None:
        await conn.set_type_codec(
            "jsonb", encoder=lambda v: v, decoder=json.loads, schema="pg_catalog"
        )

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            try:
                await asyncio.wait_for(pool.close(), 10)
            except _CLOSE_ERRORS:
                pool.terminate()

    def _q(self, sql: str) -> str:
        text = self._sql.get(sql)
        if text is None:
            text = self._sql[sql] = sql.replace("{s}", self.schema)
        return text

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise StoreError("the store is not connected; use `async with Hub(...)`")
        return self._pool

    async def retry(
        self,
        op: Callable[[], Awaitable[T]],
        *,
        what: str,
        attempts: int | None = None,
    ) -> T:
        """Run ``op``, retrying disconnects with capped exponential backoff.

        ``attempts=None`` retries until Postgres is back: a checkpoint must not be dropped.
        """
        delay = 0.05
        n = 0
        while True:
            try:
                return await op()
            except Exception as exc:
                if not is_disconnect(exc):
                    raise
                n += 1
                if attempts is not None and n >= attempts:
                    raise StoreError(f"Postgres unreachable during {what}: {exc}") from exc
                if what == "connect" and n == 1 and attempts is not None:
                    log.warning("postgres_unreachable", where=self.where,
                                waiting_s=round(_budget(attempts)), error=repr(exc)[:200])
                elif what != "connect":
                    log.warning("store_retry", op=what, attempt=n, error=repr(exc)[:200])
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 2.0)

    async def _fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        text = self._q(sql)

        async def op() -> list[asyncpg.Record]:
            self.statements += 1
            return await self.pool.fetch(text, *args)

        return await self.retry(op, what=sql.split("\n", 1)[0][:60])

    async def _execute(self, sql: str, *args: Any) -> str:
        text = self._q(sql)

        async def op() -> str:
            self.statements += 1
            return await self.pool.execute(text, *args)

        return await self.retry(op, what=sql.split("\n", 1)[0][:60])

    # -- migrations ----------------------------------------------------------------------
    async def migrate(self) -> list[str]:
        """Apply pending migrations in order; safe to run from many processes at once."""
        files = sorted(
            (f for f in resources.files("hub.store.migrations").iterdir()
             if f.name.endswith(".sql")),
            key=lambda f: f.name,
        )
        applied_now: list[str] = []

        async def op() -> None:
            async with self.pool.acquire() as conn, conn.transaction():
                await conn.execute(q.MIGRATION_LOCK.replace("$1", "$1::text"), self.schema)
                await conn.execute(self._q(q.CREATE_MIGRATION_TABLE))
                done = {r["version"] for r in await conn.fetch(self._q(q.APPLIED_MIGRATIONS))}
                for f in files:
                    version = int(f.name.split("_", 1)[0])
                    if version in done:
                        continue
                    await conn.execute(f.read_text().replace("{schema}", self.schema))
                    await conn.execute(self._q(q.RECORD_MIGRATION), version, f.name)
                    applied_now.append(f.name)

        await self.retry(op, what="migrate", attempts=20)
        if applied_now:
            log.info("migrations_applied", schema=self.schema, files=applied_now)
        return applied_now

    # -- executions ----------------------------------------------------------------------
    async def start_batch(self, rows: Sequence[StartRow], lease_s: float) -> set[uuid.UUID]:
        recs = await self._fetch(
            q.START_BATCH,
            [r.id for r in rows], [r.workflow for r in rows], [r.version for r in rows],
            [r.transaction_id for r in rows], [r.input for r in rows],
            [r.trigger for r in rows], [r.keep for r in rows], lease_s,
            [r.owner for r in rows], [r.status for r in rows], [r.steps for r in rows],
            self.channel,
        )
        return {r["id"] for r in recs}

    async def find_started(self, keys: Sequence[tuple[str, str]]) -> list[Row]:
        recs = await self._fetch(q.FIND_STARTED, [k[0] for k in keys], [k[1] for k in keys])
        return [_decode_row(r) for r in recs]

    async def archive_finished(self, workflow: str, transaction_id: str) -> bool:
        return await self._execute(q.ARCHIVE_FINISHED, workflow, transaction_id) != "UPDATE 0"

    async def checkpoint_batch(self, rows: Sequence[CheckpointRow]) -> set[uuid.UUID]:
        recs = await self._fetch(
            q.CHECKPOINT_BATCH,
            [r.id for r in rows], [r.epoch for r in rows], [r.status for r in rows],
            [r.phase for r in rows], [r.steps for r in rows], [r.result for r in rows],
            [r.error for r in rows], [r.hold for r in rows], [r.due_s for r in rows],
            [r.finished for r in rows], [r.retain_s for r in rows], [r.events for r in rows],
            self.channel, [r.outbox for r in rows], [r.seen for r in rows],
            [r.calls for r in rows],
        )
        return {r["id"] for r in recs}

    async def claim_due(self, owner: str, lease_s: float, limit: int) -> list[Row]:
        return [_decode_row(r) for r in await self._fetch(q.CLAIM_DUE, owner, lease_s, limit)]

    async def claim_one(self, owner: str, lease_s: float, execution_id: uuid.UUID) -> Row | None:
        recs = await self._fetch(q.CLAIM_ONE, owner, lease_s, execution_id)
        return _decode_row(recs[0]) if recs else None

    async def renew_leases(
        self, held: Sequence[tuple[uuid.UUID, int]], lease_s: float
    ) -> set[uuid.UUID]:
        recs = await self._fetch(
            q.RENEW_LEASES, [h[0] for h in held], [h[1] for h in held], lease_s
        )
        return {r["id"] for r in recs}

    async def release_leases(self, held: Sequence[tuple[uuid.UUID, int]]) -> None:
        await self._execute(q.RELEASE_LEASES, [h[0] for h in held], [h[1] for h in held])

    async def get(self, execution_id: uuid.UUID) -> Row | None:
        recs = await self._fetch(q.GET_BY_ID, execution_id)
        return _decode_row(recs[0]) if recs else None


    async def get_by_transaction(self, transaction_id: str, workflow: str | None) -> list[Row]:
        recs = await self._fetch(q.GET_BY_TRANSACTION, transaction_id, workflow)
        return [_decode_row(r) for r in recs]

    async def list_executions(
        self,
        *,
        workflow: str | None = None,
        status: str | None = None,
        before: tuple[Any, uuid.UUID] | None = None,
        limit: int = 50,
    ) -> list[Row]:
        recs = await self._fetch(
            q.LIST_EXECUTIONS, workflow, status, before[0] if before else None,
            before[1] if before else None, limit,
        )
        return [_decode_row(r) for r in recs]


    async def park(self, execution_id: uuid.UUID, epoch: int, message: str) -> None:
        await self._execute(q.PARK, execution_id, epoch, message)

    async def add_signal(
        self, execution_id: uuid.UUID, step: str | None, kind: str, payload: str | None,
        audit: AuditRecord | None = None, once: WebhookDelivery | None = None,
    ) -> bool:
        """Record an outside outcome, and the operator action behind it if ``audit`` (in one
        transaction). With ``once`` the signed delivery's id is recorded with it, and False
        says that id was used before: nothing was recorded."""
        who = (None,) * 6 if audit is None else (
            audit.actor_id, audit.actor_name, audit.via, audit.action, audit.target,
            audit.detail)
        seen = (None,) * 4 if once is None else (once.source, once.id, once.keep_s,
                                                 once.digest)
        recs = await self._fetch(q.ADD_SIGNAL, execution_id, step, kind, payload, *who, *seen)
        return bool(recs[0]["fresh"])

    async def webhook_seen(self, source: str, delivery: str) -> Row | None:
        """What an accepted delivery id did (execution_id, step, kind, digest), if any."""
        recs = await self._fetch(q.WEBHOOK_SEEN, source, delivery)
        return dict(recs[0]) if recs else None

    async def purge_webhook_ids(self, limit: int = 1000) -> int:
        status = await self._execute(q.PURGE_WEBHOOK_IDS, limit)
        return int(status.split()[-1])

    async def purge_housekeeping(self, retention: Retention,
                                 limit: int = 1000) -> dict[str, int]:
        """One bounded batch from each table that only grows: used webhook ids, expired
        locks, old redrive records, old audit entries, ended console sessions, published
        outbox rows. Rows per table purged."""
        done: dict[str, int] = {
            "webhook_ids": await self.purge_webhook_ids(limit),
            "console_sessions": await self.purge_console_sessions(limit),
            "outbox": await self.outbox_purge_sent(retention.outbox_s, limit)}
        for name, sql, args in (("locks", q.PURGE_EXPIRED_LOCKS, (limit,)),
                                ("redrives", q.PURGE_REDRIVES, (retention.redrive_s, limit)),
                                ("audit", q.PURGE_AUDIT, (retention.audit_s, limit))):
            done[name] = int((await self._execute(sql, *args)).split()[-1])
        return done

    async def read_signals(self, execution_id: uuid.UUID) -> list[Row]:
        return [_decode_row(r) for r in await self._fetch(q.READ_SIGNALS, execution_id)]

    async def delete_signals(self, execution_id: uuid.UUID, ids: list[int]) -> None:
        await self._execute(q.DELETE_SIGNALS, execution_id, ids)

    async def purge_finished(self, grace_s: float = 0.0, limit: int = 1000) -> int:
        status = await self._execute(q.PURGE_FINISHED, grace_s, limit)
        return int(status.split()[-1])

    async def forget_finished(self, execution_id: uuid.UUID, keep_s: float) -> None:
        await self._execute(q.FORGET_EXECUTION, execution_id, keep_s)

    # -- fan-out items and child executions ------------------------------------------------
    async def fanout_items(self, execution_id: uuid.UUID, step: str) -> list[Row]:
        return [_decode_row(r) for r in await self._fetch(q.FANOUT_ITEMS, execution_id, step)]

    async def fanout_insert(self, execution_id: uuid.UUID, epoch: int, step: str,
                            keys: Sequence[str]) -> bool:
        """Store a fan-out's items; False when the epoch no longer holds (nothing stored)."""
        status = await self._execute(q.FANOUT_INSERT, execution_id, step, epoch,
                                     list(range(len(keys))), list(keys))
        return status != "INSERT 0 0" or not keys

    async def fanout_write(self, rows: Sequence[ItemRow]) -> set[tuple[uuid.UUID, str, int]]:
        recs = await self._fetch(
            q.FANOUT_WRITE, [r.execution_id for r in rows], [r.step for r in rows],
            [r.idx for r in rows], [r.epoch for r in rows], [r.state for r in rows],
            [r.attempts for r in rows], [r.comp_attempts for r in rows],
            [r.seq for r in rows], [r.output for r in rows],
            [r.compensate_input for r in rows], [r.error for r in rows])
        return {(r["execution_id"], r["step"], r["idx"]) for r in recs}

    async def fanout_counts(self, execution_id: uuid.UUID) -> list[Row]:
        return [_decode_row(r) for r in await self._fetch(q.FANOUT_COUNTS, execution_id)]

    async def fanout_page(self, execution_id: uuid.UUID, step: str, start: int,
                          limit: int) -> list[Row]:
        return [_decode_row(r) for r in
                await self._fetch(q.FANOUT_PAGE, execution_id, step, start, limit)]

    async def children_of(self, execution_id: uuid.UUID) -> list[Row]:
        return [_decode_row(r) for r in await self._fetch(q.CHILDREN_OF, execution_id)]

    async def reopen_for_compensation(self, execution_id: uuid.UUID, error: str) -> bool:
        return bool(await self._fetch(q.REOPEN_FOR_COMPENSATION, execution_id, error))

    async def notify(self, payload: str) -> None:
        await self._execute(q.NOTIFY, self.channel, payload)

    # -- key locks -----------------------------------------------------------------------
    async def lock_acquire(self, key: str, owner: str, ttl_s: float | None) -> bool:
        return bool(await self._fetch(q.LOCK_ACQUIRE, key, owner, ttl_s))

    async def lock_release(self, key: str, owner: str) -> None:
        await self._execute(q.LOCK_RELEASE, key, owner)

    # -- outbox --------------------------------------------------------------------------
    async def outbox_relay_batch(
        self, limit: int, publish: Callable[[list[Row]], Awaitable[Sequence[OutboxFate]]],
        policy: RetryPolicy | None = None,
    ) -> list[Row]:
        """Claim due rows, ``publish`` them, record each row's fate: one transaction.

        ``publish`` answers a fate per row (it does not raise for a row's failure), so the
        healthy rows of a batch are marked sent even when a neighbour cannot be published,
        and one bad row never holds back later ones. A crash after publishing and before the
        commit publishes the batch again (each row carries its unique id). Returns the
        settled rows (id, topic, attempts, sent, failed, next_attempt_at, last_error).
        """
        rules = policy or RetryPolicy()

        async def op() -> list[Row]:
            async with self.pool.acquire() as conn, conn.transaction():
                self.statements += 1
                rows = [dict(r.items()) for r in await conn.fetch(self._q(q.OUTBOX_CLAIM), limit)]
                if not rows:
                    return []
                fates = list(await publish(rows))
                self.statements += 1
                settled = await conn.fetch(
                    self._q(q.OUTBOX_SETTLE), [f.id for f in fates], [f.fate for f in fates],
                    rules.max_attempts, rules.backoff_s, rules.backoff_max_s,
                    [f.error for f in fates])
                return [_decode_row(r) for r in settled]

        return await self.retry(op, what="outbox relay")

    async def outbox_retry(self, ids: Sequence[uuid.UUID], *, all_failed: bool = False,
                           audit: AuditRecord | None = None,
                           limit: int = 1000) -> list[uuid.UUID]:
        """Make unsent rows due again (``ids``, or up to ``limit`` failed ones), each retry
        audited in the same statement; the ids made due (a sent or unknown id is not)."""
        who = (None,) * 4 if audit is None else (
            audit.actor_id, audit.actor_name, audit.via, audit.action)
        recs = await self._fetch(q.OUTBOX_RETRY, list(ids), *who, all_failed,
                                 max(limit, len(ids)))
        return [r["id"] for r in recs]

    async def outbox_purge_sent(self, retention_s: float, limit: int = 1000) -> int:
        """Delete up to ``limit`` rows sent more than ``retention_s`` ago."""
        status = await self._execute(q.OUTBOX_PURGE_SENT, retention_s, limit)
        return int(status.split()[-1])

    async def outbox_list(self, *, state: str | None = None,
                          before: tuple[Any, uuid.UUID] | None = None,
                          limit: int = 50) -> list[Row]:
        """Unsent rows, newest first, optionally of one state; planned for the state at hand
        (a generic plan could not use the failed rows' partial index)."""
        recs = await self._fetch_custom_plan(
            q.OUTBOX_LIST, state, before[0] if before else None,
            before[1] if before else None, limit)
        return [_decode_row(r) for r in recs]

    async def outbox_get(self, ids: Sequence[uuid.UUID]) -> list[Row]:
        return [_decode_row(r) for r in await self._fetch(q.OUTBOX_GET, list(ids))]

    async def outbox_backlog(self) -> Row:
        return _decode_row((await self._fetch(q.OUTBOX_BACKLOG))[0])

    async def outbox_for_execution(self, execution_id: uuid.UUID) -> list[Row]:
        return [_decode_row(r) for r in await self._fetch(q.OUTBOX_FOR_EXECUTION, execution_id)]

    async def record_redrive(self, dlq_topic: str, partition: int, offset: int, target: str,
                             by: str) -> None:
        await self._execute(q.RECORD_REDRIVE, dlq_topic, partition, offset, target, by)

    async def redrives_at(self, dlq_topic: str, positions: Sequence[tuple[int, int]]
                          ) -> list[Row]:
        """The redrives of these dead letters (partition, offset), oldest first."""
        if not positions:
            return []
        rows = await self._fetch(q.REDRIVES_AT, dlq_topic, [p for p, _ in positions],
                                 [o for _, o in positions])
        return [_decode_row(r) for r in rows]

    async def redriven_count(self, dlq_topic: str,
                             ranges: Sequence[tuple[int, int, int]]) -> int:
        """Dead letters redriven at least once among (partition, from, to) offset ranges."""
        if not ranges:
            return 0
        rows = await self._fetch(q.REDRIVEN_COUNT, dlq_topic, [p for p, _, _ in ranges],
                                 [lo for _, lo, _ in ranges], [hi for _, _, hi in ranges])
        return int(rows[0]["n"]) if rows else 0

    # -- scheduled jobs ------------------------------------------------------------------
    # Used by hub.runtime.scheduler only. Timestamps (``Any`` below) are aware datetimes;
    # ticks come back as UTC datetimes, exactly as they went in.
    async def schedule_upsert(
        self, jobs: Sequence[tuple[str, str, str, str, str, Any]]
    ) -> None:
        """Make the jobs' rows match their definitions: ``(job, workflow, cron, timezone,
        misfire, next_tick)``; ``next_tick`` applies to new jobs and changed schedules only."""
        await self._execute(
            q.SCHEDULE_UPSERT, [j[0] for j in jobs], [j[1] for j in jobs],
            [j[2] for j in jobs], [j[3] for j in jobs], [j[4] for j in jobs],
            [j[5] for j in jobs],
        )

    async def schedule_peek(self, jobs: Sequence[str]) -> tuple[bool, list[Row]]:
        """(whether a tick of ``jobs`` awaits recovery, the active jobs' next ticks)."""
        recs = await self._fetch(q.SCHEDULE_PEEK, list(jobs))
        unstarted = bool(recs[0]["unstarted"]) if recs else False
        return unstarted, [_decode_row(r) for r in recs if r["job"] is not None]

    async def schedule_claim(
        self,
        advances: Sequence[tuple[str, Any, Any, Any]],
        ticks: Sequence[tuple[str, Any]],
        recover_after_s: float,
    ) -> tuple[set[str], list[tuple[str, Any]]]:
        """Advance jobs ``(job, seen_next_tick, new_next_tick, new_last_tick | None)`` and
        claim their ``(job, tick)`` rows in one transaction; returns (the jobs this call
        advanced, the ticks it claimed). A claimed tick not marked started within
        ``recover_after_s`` is recovered by any scheduler."""
        recs = await self._fetch(
            q.SCHEDULE_CLAIM, [a[0] for a in advances], [a[1] for a in advances],
            [a[2] for a in advances], [a[3] for a in advances], [t[0] for t in ticks],
            [t[1] for t in ticks], recover_after_s,
        )
        return ({r["job"] for r in recs},
                [(r["job"], r["tick"]) for r in recs if r["tick"] is not None])

    async def schedule_take_unstarted(
        self, jobs: Sequence[str], lease_s: float, limit: int
    ) -> list[Row]:
        """Lease up to ``limit`` ticks of ``jobs`` whose start is overdue (job, tick, attempts)."""
        recs = await self._fetch(q.SCHEDULE_TAKE_UNSTARTED, list(jobs), lease_s, limit)
        return [_decode_row(r) for r in recs]

    async def schedule_mark_started(
        self,
        outcomes: Sequence[tuple[str, Any, uuid.UUID | None, str | None, bool]],
        max_attempts: int,
        backoff_s: float,
    ) -> None:
        """Record start outcomes ``(job, tick, execution_id | None, error | None, final)``;
        ``final``: the error will not go away by retrying (no retry is scheduled)."""
        if not outcomes:
            return
        await self._execute(
            q.SCHEDULE_MARK_STARTED, [o[0] for o in outcomes], [o[1] for o in outcomes],
            [o[2] for o in outcomes], [o[3] for o in outcomes], max_attempts, backoff_s,
            [o[4] for o in outcomes],
        )

    async def schedule_jobs(self) -> list[Row]:
        return [_decode_row(r) for r in await self._fetch(q.SCHEDULE_JOBS)]

    async def schedule_ticks(self, job: str, limit: int = 100) -> list[Row]:
        """The latest ticks of one job, newest first."""
        return [_decode_row(r) for r in await self._fetch(q.SCHEDULE_TICKS, job, limit)]

    async def schedule_set_paused(self, job: str, paused: bool, next_tick: Any = None) -> bool:
        """Pause or resume a job (resuming from ``next_tick``); False if no such job."""
        return bool(await self._fetch(q.SCHEDULE_SET_PAUSED, job, paused, next_tick))

    async def schedule_purge_ticks(self, jobs: Sequence[str], before: Any,
                                   limit: int = 10_000) -> int:
        status = await self._execute(q.SCHEDULE_PURGE_TICKS, list(jobs), before, limit)
        return int(status.split()[-1])

    # -- api keys ------------------------------------------------------------------------
    # Used by hub.api only: its keys, the JSON API's execution list, the metrics and the
    # readiness check.
    async def api_key_insert(self, key_id: uuid.UUID, name: str, prefix: str, key_hash: str,
                             scopes: Sequence[str]) -> Row:
        recs = await self._fetch(q.API_KEY_INSERT, key_id, name, prefix, key_hash, list(scopes))
        return _decode_row(recs[0])

    async def api_key_authenticate(self, prefix: str, key_hash: str,
                                   touch_every_s: float) -> Row | None:
        """The key row of ``prefix`` (hash included, for the caller to compare), or None."""
        recs = await self._fetch(q.API_KEY_AUTHENTICATE, prefix, key_hash, touch_every_s)
        return _decode_row(recs[0]) if recs else None

    async def api_key_revoke(self, key_id: uuid.UUID | None, prefix: str | None) -> Row | None:
        recs = await self._fetch(q.API_KEY_REVOKE, key_id, prefix)
        return _decode_row(recs[0]) if recs else None

    async def api_key_list(self) -> list[Row]:
        return [_decode_row(r) for r in await self._fetch(q.API_KEY_LIST)]

    # -- console sessions ----------------------------------------------------------------
    # Used by hub.api.console only.
    async def console_session_open(self, session_id: uuid.UUID, token_hash: str,
                                   api_key_id: uuid.UUID, csrf: str, lifetime_s: float,
                                   idle_s: float, user_agent: str | None,
                                   remote_addr: str | None) -> None:
        await self._execute(q.CONSOLE_SESSION_OPEN, session_id, token_hash, api_key_id, csrf,
                            lifetime_s, min(idle_s, lifetime_s), user_agent, remote_addr)

    async def console_session_find(self, token_hash: str, idle_s: float,
                                   touch_every_s: float) -> Row | None:
        """The session of ``token_hash`` with its key's name, prefix, scopes and revocation,
        and whether either deadline passed (by the database's clock); None if unknown."""
        recs = await self._fetch(q.CONSOLE_SESSION_FIND, token_hash, idle_s, touch_every_s)
        return _decode_row(recs[0]) if recs else None

    async def console_session_revoke(self, token_hash: str) -> bool:
        """Revoke the session of ``token_hash``; False if there is none."""
        status = await self._execute(q.CONSOLE_SESSION_REVOKE, token_hash)
        return int(status.split()[-1]) > 0

    async def purge_console_sessions(self, limit: int = 1000) -> int:
        status = await self._execute(q.PURGE_CONSOLE_SESSIONS, limit)
        return int(status.split()[-1])

    async def api_list_executions(
        self,
        *,
        workflow: str | None = None,
        status: str | None = None,
        created_after: Any = None,
        created_before: Any = None,
        trigger_kind: str | None = None,
        before: tuple[Any, uuid.UUID] | None = None,
        limit: int = 50,
        transaction_id: str | None = None,
        key_pattern: str | None = None,
    ) -> list[Row]:
        """Summaries, newest first; ``before`` is the (created_at, id) of the last row seen;
        ``key_pattern`` is a LIKE pattern on the event key (``abc%``: keys starting abc).

        Planned for the filters at hand: a generic plan of ``($1 IS NULL OR workflow = $1)``
        can use no index for it, and Postgres switches a prepared statement to its generic
        plan after five runs, so one cheap unfiltered page would make every later filtered
        one walk the whole table."""
        recs = await self._fetch_custom_plan(
            q.API_LIST_EXECUTIONS, workflow, status, created_after, created_before,
            trigger_kind, before[0] if before else None, before[1] if before else None, limit,
            transaction_id, key_pattern,
        )
        return [_decode_row(r) for r in recs]

    async def _fetch_custom_plan(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        """``sql`` planned for these values every time (``plan_cache_mode`` in a read-only
        transaction of its own): 3 round trips instead of 1, for statements whose optional
        filters only a custom plan can serve with an index."""
        text = self._q(sql)

        async def op() -> list[asyncpg.Record]:
            self.statements += 1
            async with self.pool.acquire() as conn:
                await conn.execute(q.CUSTOM_PLAN_BEGIN)
                try:
                    rows: list[asyncpg.Record] = await conn.fetch(text, *args)
                finally:
                    await conn.execute(q.CUSTOM_PLAN_END)
                return rows

        return await self.retry(op, what=sql.split("\n", 1)[0][:60])

    async def api_execution_counts(self) -> list[Row]:
        return [_decode_row(r) for r in await self._fetch(q.API_EXECUTION_COUNTS)]

    async def pending_migrations(self) -> list[str]:
        """Migration files not applied to this schema (the readiness check); raises if the
        database is unreachable or the schema was never migrated."""
        recs = await self._fetch(q.APPLIED_MIGRATIONS)
        done = {r["version"] for r in recs}
        return sorted(
            f.name for f in resources.files("hub.store.migrations").iterdir()
            if f.name.endswith(".sql") and int(f.name.split("_", 1)[0]) not in done
        )

    async def api_outbox_for_execution(self, execution_id: uuid.UUID) -> list[Row]:
        recs = await self._fetch(q.API_OUTBOX_FOR_EXECUTION, execution_id)
        return [_decode_row(r) for r in recs]

    async def api_calls_for_execution(self, execution_id: uuid.UUID,
                                      limit: int = 1000) -> list[Row]:
        """The connector calls an execution made, oldest first, at most ``limit``."""
        recs = await self._fetch(q.API_CALLS_FOR_EXECUTION, execution_id, limit)
        return [dict(r) for r in recs]

    # -- console (through HubService) ----------------------------------------------------
    async def api_execution_buckets(self, since: Any, bucket_s: int) -> list[Row]:
        """Executions created since ``since`` per workflow, status and ``bucket_s`` bucket."""
        return [_decode_row(r) for r in
                await self._fetch(q.API_EXECUTION_BUCKETS, since, float(bucket_s))]

    async def audit_insert(self, audit: AuditRecord, execution_id: uuid.UUID | None) -> Row:
        """Record an operator action that no signal carries."""
        recs = await self._fetch(q.AUDIT_INSERT, audit.actor_id, audit.actor_name, audit.via,
                                 audit.action, execution_id, audit.target, audit.detail)
        return _decode_row(recs[0])

    async def audit_for_execution(self, execution_id: uuid.UUID, limit: int = 500) -> list[Row]:
        return [_decode_row(r) for r in
                await self._fetch(q.AUDIT_FOR_EXECUTION, execution_id, limit)]

    async def audit_for_targets(self, targets: Sequence[str]) -> list[Row]:
        return [_decode_row(r) for r in await self._fetch(q.AUDIT_FOR_TARGETS, list(targets))]
