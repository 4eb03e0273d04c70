"""``@scheduled(cron)``: workflows started on a clock, each tick exactly once across replicas.

Time is data (invariant 8). Every job has a row holding its next tick; firing a tick is one
statement that advances that row (compare-and-set on the next tick it read) and inserts the
tick's ``(job, tick)`` row, and only the scheduler whose insert succeeded starts the workflow,
after the commit, with the deterministic transaction id ``schedule:<job>:<tick>``. So:

* two replicas never fire one tick twice (the row lock, the compare-and-set and the primary
  key each make sure of it);
* a restart loses no tick: a tick that was due while no scheduler ran is found from the
  job's stored next tick and handled by the job's misfire policy;
* a crash between claiming a tick and starting its workflow loses nothing either: the tick
  row has no execution id yet, and once its deadline passes any scheduler starts it again
  (the transaction id makes a start that did happen a no-op).

Cron math is croniter's, on wall-clock time in the job's timezone (zoneinfo), converted to
UTC instants, which is what the rows store. Across a DST change:

* a wall time skipped by spring-forward fires at the same instant it would have without the
  change, i.e. shifted by the gap (RFC 5545): ``0 2 * * *`` in Europe/Berlin fires at 03:00
  CEST on the last Sunday of March; ticks that land on one instant fire once;
* a wall time repeated by fall-back fires once, at its first occurrence, unless the minute or
  hour field starts with ``*`` (``*/15 * * * *``, ``0 * * * *``): such a job fires in both
  passes, so it keeps its rhythm in real time. This is Vixie cron's rule.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, TypeVar, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import structlog
from croniter import CroniterBadDateError, croniter

from hub.aio import wait_event
from hub.errors import (
    DefinitionError,
    HubError,
    InputValidationError,
    PayloadTooLarge,
    UnknownWorkflow,
)

if TYPE_CHECKING:
    from hub.engine.hub import Hub
    from hub.sdk.workflow import WorkflowDefinition

log = structlog.get_logger("hub.scheduler")

Misfire = Literal["once", "all", "skip"]
"""What a job does with ticks that passed while no scheduler ran (see :class:`ScheduledJob`)."""

InputFn = Callable[[datetime], Any]
"""``(tick) -> input``: the tick is an aware datetime in the job's timezone; may be async."""

F = TypeVar("F", bound=InputFn)

_MACROS = {
    "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_RANDOM_OR_HASHED = re.compile(r"(?<![a-z])[hr](?![a-z])", re.IGNORECASE)
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$")
_SPAN = timedelta(hours=3)
"""Wider than any UTC offset change: around a DST change, wall time and instants may be out
of order by up to this much, so searches look this far beyond the first candidate."""
_MAX_STEPS = 100_000
_FINAL_ERRORS: tuple[type[Exception], ...] = (
    InputValidationError, PayloadTooLarge, UnknownWorkflow, DefinitionError,
)
"""Start errors that a retry of the same tick cannot cure: recorded, not retried."""
_EPSILON = timedelta(microseconds=1)


def _utc(t: datetime) -> datetime:
    if t.tzinfo is None:
        raise HubError(f"naive datetime {t!r}: the scheduler works on aware datetimes only")
    return t.astimezone(UTC)


def tick_id(tick: datetime) -> str:
    """The canonical text of a tick (UTC ISO 8601): part of transaction ids and triggers."""
    return _utc(tick).isoformat()


class CronSchedule:
    """A five-field cron expression read in one timezone: the UTC instants at which it ticks.

    Only the module's rules for DST (see the module docstring) are the scheduler's own; the
    field syntax is croniter's, minus what would make replicas disagree (``R`` picks random
    values, ``H`` hashes) or is easily misread (a sixth field is seconds in croniter but the
    first field in Quartz and Spring).
    """

    __slots__ = ("_both_passes", "expr", "tz")

    def __init__(self, expr: str, tz: ZoneInfo) -> None:
        self.expr = expr
        self.tz = tz
        minute, hour = expr.split()[:2]
        self._both_passes = minute.startswith("*") or hour.startswith("*")

    @staticmethod
    def normalize(expr: str) -> str:
        """The expression with macros expanded and blanks collapsed; ValueError if bad."""
        text = " ".join(expr.split())
        text = _MACROS.get(text.lower(), text)
        fields = text.split()
        if len(fields) != 5:
            raise ValueError(
                f"expected five fields (minute hour day-of-month month day-of-week) or a macro "
                f"({', '.join(_MACROS)}), got {len(fields)} field(s)"
                + ("; seconds and years fields are not supported" if len(fields) > 5 else "")
            )
        if _RANDOM_OR_HASHED.search(text):
            raise ValueError("random (R) and hashed (H) values are not supported: every "
                             "replica must compute the same ticks")
        try:
            croniter(text, datetime(2000, 1, 1))
        except (ValueError, KeyError, TypeError) as exc:  # croniter's errors are ValueErrors
            raise ValueError(str(exc)) from None
        return text

    def _steady(self, t: datetime) -> bool:
        """No UTC offset change within ``_SPAN`` of instant ``t``: wall time is monotonic."""
        return (t - _SPAN).astimezone(self.tz).utcoffset() == (
            (t + _SPAN).astimezone(self.tz).utcoffset()
        )

    def _wall(self, t: datetime) -> datetime:
        return t.astimezone(self.tz).replace(tzinfo=None)

    def _instants(self, wall: datetime) -> tuple[datetime, ...]:
        """The instants a matching wall time fires at (none, one or two: DST)."""
        first = wall.replace(tzinfo=self.tz, fold=0).astimezone(UTC)
        second = wall.replace(tzinfo=self.tz, fold=1).astimezone(UTC)
        if first == second:
            return (first,)
        if first.astimezone(self.tz).replace(tzinfo=None) != wall:
            return (first,)  # skipped by spring-forward: fold=0 is the pre-gap offset
        return (first, second) if self._both_passes else (first,)

    def next_after(self, t: datetime) -> datetime:
        """The first tick strictly after instant ``t`` (UTC)."""
        t = _utc(t)
        wall = self._wall(t)
        if not self._steady(t):
            wall -= _SPAN
        it = croniter(self.expr, wall)
        best: datetime | None = None
        best_wall = wall
        try:
            for _ in range(_MAX_STEPS):
                w = it.get_next(datetime)
                if best is not None and w > best_wall + _SPAN:
                    break
                for u in self._instants(w):
                    if u > t and (best is None or u < best):
                        best, best_wall = u, w
                if best is not None and self._steady(best):
                    break
        except CroniterBadDateError:
            pass
        if best is None:
            raise HubError(f"cron {self.expr!r} has no tick after {t.isoformat()}")
        return best

    def between(self, start: datetime, end: datetime, limit: int) -> tuple[list[datetime], bool]:
        """The latest ``limit`` ticks in ``[start, end]``, newest first, and whether there
        were more. Walks back from ``end``, so the cost is what it returns, not the span."""
        start, end = _utc(start), _utc(end)
        if end < start:
            return [], False
        hi = self._wall(end + _EPSILON)
        if not self._steady(end):
            hi += _SPAN
        lo = self._wall(start)
        if not self._steady(start):
            lo -= _SPAN
        found: set[datetime] = set()
        stop_below: datetime | None = None
        it = croniter(self.expr, hi)
        try:
            for _ in range(_MAX_STEPS + limit):
                w = it.get_prev(datetime)
                if w < lo or (stop_below is not None and w < stop_below):
                    break
                found.update(u for u in self._instants(w) if start <= u <= end)
                if stop_below is None and len(found) > limit:
                    # the (limit+1)-th newest is known; walls far enough below it are older
                    edge = sorted(found, reverse=True)[limit]
                    stop_below = self._wall(edge) - (_SPAN if not self._steady(edge)
                                                     else timedelta(0))
        except CroniterBadDateError:
            pass
        ticks = sorted(found, reverse=True)
        return ticks[:limit], len(ticks) > limit


@dataclass(frozen=True, slots=True)
class TickPlan:
    """What one pass does with one due job: the ticks it fires and where it moves to."""

    job: str
    seen: datetime
    fire: tuple[datetime, ...]
    next_tick: datetime
    late: int
    """Due ticks more than the grace late (they passed while no scheduler ran)."""
    dropped: int
    """Due ticks the misfire policy does not fire."""
    beyond_catch_up: bool
    """More ticks were due than ``max_catch_up``: the older ones were not even looked at."""


@dataclass(frozen=True)
class ScheduledJob:
    """A registered job: ``workflow`` started with ``input`` on every tick of ``cron``.

    ``misfire`` decides what happens to ticks that passed while no scheduler ran (a tick more
    than the scheduler's grace late): ``once`` fires one run, for the latest of them; ``all``
    fires each of them (the latest ``max_catch_up``, logged); ``skip`` fires none.

    Calling the job with a function makes that function its input (the decorator form).
    """

    name: str
    cron: str
    workflow: str
    timezone: str
    misfire: Misfire
    input: Any
    module: str
    schedule: CronSchedule = field(repr=False, compare=False)
    registry: ScheduleRegistry = field(repr=False, compare=False)

    def __call__(self, fn: F) -> F:
        """``@scheduled(...)`` on ``def make_input(tick)``: the tick's input is its result."""
        if self.input is not None:
            raise DefinitionError(
                f"scheduled job {self.name!r}: input is given twice (input= and a decorated "
                "function); use one"
            )
        _check_input_fn(self.name, fn)
        self.registry.add(replace(self, input=fn))
        return fn

    async def input_for(self, tick: datetime) -> Any:
        """The input of the run for ``tick`` (computed again if the start is recovered, so a
        function input should depend on the tick only)."""
        if not callable(self.input):
            return self.input
        value = self.input(tick.astimezone(self.schedule.tz))
        if inspect.isawaitable(value):
            value = await value
        return value

    def transaction_id(self, tick: datetime) -> str:
        return f"schedule:{self.name}:{tick_id(tick)}"

    def trigger(self, tick: datetime) -> dict[str, Any]:
        return {"kind": "schedule", "job": self.name, "tick": tick_id(tick)}

    def plan(self, seen: datetime, now: datetime, *, grace: timedelta,
             max_catch_up: int) -> TickPlan:
        """Decide, for ``now``, which ticks from ``seen`` (the stored next tick) on to fire."""
        due, more = self.schedule.between(seen, now, max_catch_up)
        late = sum(1 for t in due if now - t > grace)
        if self.misfire == "all":
            fire = due
        elif self.misfire == "once":
            fire = due[:1]
        else:
            fire = [t for t in due if now - t <= grace]
        return TickPlan(
            job=self.name, seen=seen, fire=tuple(sorted(fire)),
            next_tick=self.schedule.next_after(now), late=late,
            dropped=len(due) - len(fire), beyond_catch_up=more,
        )


def _check_input_fn(name: str, fn: Callable[..., Any]) -> None:
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(positional) != 1 and not any(p.kind == p.VAR_POSITIONAL for p in params):
        raise DefinitionError(
            f"scheduled job {name!r}: the input function takes one argument (the tick), "
            f"got {len(positional)}"
        )


class ScheduleRegistry:
    """Jobs by name; a name defined in two modules is an error, a re-import is not."""

    def __init__(self) -> None:
        self._by_name: dict[str, ScheduledJob] = {}

    def add(self, job: ScheduledJob) -> None:
        old = self._by_name.get(job.name)
        if old is not None and old.module != job.module:
            raise DefinitionError(
                f"scheduled job {job.name!r} is defined twice: in {old.module} and {job.module}"
            )
        self._by_name[job.name] = job

    def get(self, name: str) -> ScheduledJob:
        try:
            return self._by_name[name]
        except KeyError:
            raise DefinitionError(
                f"no scheduled job named {name!r} (known: {', '.join(sorted(self._by_name))})"
            ) from None

    def all(self) -> list[ScheduledJob]:
        return list(self._by_name.values())

    def names(self) -> list[str]:
        return sorted(self._by_name)


SCHEDULES = ScheduleRegistry()
"""Jobs register here when their module is imported."""


def scheduled(
    cron: str,
    *,
    name: str,
    workflow: str | WorkflowDefinition,
    timezone: str = "UTC",
    misfire: Misfire = "once",
    input: Any = None,
    registry: ScheduleRegistry | None = None,
) -> ScheduledJob:
    """Start ``workflow`` on every tick of ``cron`` (five fields, read in ``timezone``).

    ``input`` is the run's input: a value, or ``(tick) -> input`` (sync or async; the tick is
    an aware datetime in ``timezone``). Used as a decorator, the decorated function is the
    input function. Each run's transaction id is ``schedule:<name>:<tick in UTC ISO>``, and
    its trigger ``{"kind": "schedule", "job": name, "tick": ...}``. The cron expression, the
    timezone and the policy are checked here, so a mistake fails the import, not 2 a.m.
    """

    def bad(what: str, detail: str) -> DefinitionError:
        return DefinitionError(f"scheduled job {name!r}: bad {what}: {detail}")

    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise DefinitionError(
            f"scheduled job name {name!r} must match {_NAME_RE.pattern} (it is part of "
            "every run's transaction id)"
        )
    wf_name = workflow if isinstance(workflow, str) else getattr(workflow, "name", None)
    if not isinstance(wf_name, str) or not wf_name:
        raise bad("workflow", f"{workflow!r} is neither a workflow name nor a workflow")
    if misfire not in get_args(Misfire):
        raise bad("misfire", f"{misfire!r}; one of {', '.join(get_args(Misfire))}")
    try:
        tz = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError, TypeError) as exc:
        raise bad("timezone", f"{timezone!r} is not an IANA timezone name ({exc})") from None
    try:
        expr = CronSchedule.normalize(cron)
    except ValueError as exc:
        raise bad("cron", f"{cron!r}: {exc}") from None
    schedule = CronSchedule(expr, tz)
    try:
        schedule.next_after(datetime.now(UTC))
    except HubError:
        raise bad("cron", f"{cron!r} never matches a date") from None
    if callable(input):
        _check_input_fn(name, input)
    reg = registry if registry is not None else SCHEDULES
    job = ScheduledJob(
        name=name, cron=expr, workflow=wf_name, timezone=timezone, misfire=misfire,
        input=input, module=_caller_module(), schedule=schedule, registry=reg,
    )
    reg.add(job)
    return job


def _caller_module() -> str:
    frame = inspect.currentframe()
    try:
        caller = frame.f_back.f_back if frame is not None and frame.f_back else None
        return str(caller.f_globals.get("__name__", "")) if caller is not None else ""
    finally:
        del frame


_Outcome = tuple[str, datetime, uuid.UUID | None, str | None, bool]
"""A start's outcome: (job, tick, execution id, error, whether the error is final)."""


def _utc_now() -> datetime:
    return datetime.now(UTC)


class Scheduler:
    """Fires the jobs of ``registry`` for ``hub``; run one per worker, as many as you like.

    ``start()`` writes the job rows and runs the loop; ``stop()`` ends it. The loop sleeps
    until the earliest next tick, but at most ``poll_interval`` (so it notices what other
    replicas did, and jobs paused or resumed), and at idle sends one small statement per
    wake-up. ``clock`` is where "now" comes from (tests drive it; it must return aware
    datetimes). ``misfire_grace`` is how late a tick may fire and still count as on time;
    ``recover_after`` is how long a claimed tick may stay unstarted before another scheduler
    assumes its claimer died.
    """

    def __init__(
        self,
        hub: Hub,
        registry: ScheduleRegistry | None = None,
        *,
        clock: Callable[[], datetime] = _utc_now,
        poll_interval: float | None = None,
        misfire_grace: float | None = None,
        recover_after: float | None = None,
        max_catch_up: int = 1000,
        max_start_attempts: int = 5,
        purge_every: float = 3600.0,
    ) -> None:
        self.hub = hub
        self.registry = registry if registry is not None else SCHEDULES
        self.clock = clock
        self.poll_interval = poll_interval if poll_interval is not None else (
            hub.settings.poll_interval)
        self.grace = timedelta(seconds=misfire_grace if misfire_grace is not None
                               else max(60.0, 3 * self.poll_interval))
        self.recover_after = (recover_after if recover_after is not None
                              else hub.settings.lease_seconds)
        self.max_catch_up = max_catch_up
        self.max_start_attempts = max_start_attempts
        self.purge_every = purge_every
        self.fired = 0
        """Ticks this scheduler started (recovered ones included)."""
        self._jobs: dict[str, ScheduledJob] = {}
        self._mismatch_logged: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._wake = asyncio.Event()
        self._next_wake: datetime | None = None
        self._last_purge = time.monotonic()

    def _now(self) -> datetime:
        return _utc(self.clock())

    # -- lifecycle -----------------------------------------------------------------------
    async def sync(self) -> None:
        """Check every job's workflow exists and upsert the job rows (keeping their state)."""
        self._jobs = {j.name: j for j in self.registry.all()}
        known = set(self.hub.registry.names())
        for job in self._jobs.values():
            if job.workflow not in known:
                raise DefinitionError(
                    f"scheduled job {job.name!r}: workflow {job.workflow!r} is not registered "
                    f"(known: {', '.join(self.hub.registry.names()) or 'none'}); load its "
                    "module (HUB_MODULES) in this process"
                )
        if not self._jobs:
            return
        now = self._now()
        await self.hub.store.schedule_upsert([
            (j.name, j.workflow, j.cron, j.timezone, j.misfire, j.schedule.next_after(now))
            for j in self._jobs.values()
        ])

    async def start(self) -> None:
        await self.sync()
        if self._task is None:
            self._stopping = False
            self._task = asyncio.create_task(self._loop(), name="hub-scheduler")
        log.info("scheduler_started", jobs=sorted(self._jobs))

    async def stop(self, timeout: float = 10.0) -> None:
        """Let a pass under way finish (its ticks get started and recorded), then stop; a
        pass cut short after ``timeout`` is recovered by the next scheduler."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping = True
        self._wake.set()
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def __aenter__(self) -> Scheduler:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def wake(self) -> None:
        """Look at the jobs now (after a clock change in tests, or a resume)."""
        self._wake.set()

    async def _loop(self) -> None:
        while not self._stopping:
            self._wake.clear()
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("schedule_pass_failed", error=repr(exc)[:300])
                self._next_wake = None
            if self._stopping:
                break
            await wait_event(self._wake, self._sleep_for())

    def _sleep_for(self) -> float:
        if self._next_wake is None:
            return self.poll_interval
        until = (self._next_wake - self._now()).total_seconds()
        return min(self.poll_interval, max(until, 0.0))

    # -- one pass ------------------------------------------------------------------------
    async def run_once(self) -> list[tuple[str, datetime]]:
        """Fire what is due now and recover overdue starts; returns the ticks started."""
        if not self._jobs:
            self._next_wake = None
            return []
        store = self.hub.store
        now = self._now()
        unstarted, rows = await store.schedule_peek(list(self._jobs))
        due: list[tuple[ScheduledJob, datetime]] = []
        earliest: datetime | None = None
        for row in rows:
            job = self._jobs.get(row["job"])
            if job is None:
                continue
            if (row["cron"], row["timezone"]) != (job.cron, job.timezone):
                self._log_mismatch(job, row)
                continue
            if row["next_tick"] <= now:
                due.append((job, row["next_tick"]))
            elif earliest is None or row["next_tick"] < earliest:
                earliest = row["next_tick"]
        started: list[tuple[str, datetime]] = []
        if due:
            plans = [job.plan(seen, now, grace=self.grace, max_catch_up=self.max_catch_up)
                     for job, seen in due]
            for plan in plans:
                if earliest is None or plan.next_tick < earliest:
                    earliest = plan.next_tick
            started += await self._fire(plans)
        if unstarted:
            started += await self._recover()
        self._next_wake = earliest
        if time.monotonic() - self._last_purge > self.purge_every:
            self._last_purge = time.monotonic()
            cutoff = now - timedelta(days=self.hub.settings.retention_days)
            await store.schedule_purge_ticks(list(self._jobs), cutoff)
        return started

    def _log_mismatch(self, job: ScheduledJob, row: dict[str, Any]) -> None:
        if job.name not in self._mismatch_logged:
            self._mismatch_logged.add(job.name)
            log.warning("schedule_definition_differs", job=job.name, stored_cron=row["cron"],
                        stored_timezone=row["timezone"], cron=job.cron, timezone=job.timezone,
                        note="left to the schedulers that have the stored definition")

    async def _fire(self, plans: Sequence[TickPlan]) -> list[tuple[str, datetime]]:
        advanced, claimed = await self.hub.store.schedule_claim(
            [(p.job, p.seen, p.next_tick, p.fire[-1] if p.fire else None) for p in plans],
            [(p.job, t) for p in plans for t in p.fire],
            self.recover_after,
        )
        for p in plans:
            # only the scheduler that advanced the job reports what its policy did
            if p.job in advanced and (p.late or p.dropped or p.beyond_catch_up):
                log.warning(
                    "schedule_ticks_missed", job=p.job, misfire=self._jobs[p.job].misfire,
                    since=tick_id(p.seen), late=p.late, fired=len(p.fire), dropped=p.dropped,
                    beyond_catch_up=p.beyond_catch_up, next_tick=tick_id(p.next_tick),
                )
        return await self._start([(self._jobs[j], t) for j, t in claimed], recovered=False)

    async def _recover(self) -> list[tuple[str, datetime]]:
        rows = await self.hub.store.schedule_take_unstarted(
            list(self._jobs), self.recover_after, self.max_catch_up
        )
        items = [(self._jobs[r["job"]], r["tick"]) for r in rows if r["job"] in self._jobs]
        return await self._start(items, recovered=True)

    async def _start(self, items: Sequence[tuple[ScheduledJob, datetime]], *,
                     recovered: bool) -> list[tuple[str, datetime]]:
        """Start the workflow of each claimed tick, then record the outcomes in one write.

        A recovered tick may have been started by its claimer after all (it crashed before
        recording it): look first, so a non-idempotent workflow is not run twice.
        """
        if not items:
            return []
        existing: dict[tuple[str, str], uuid.UUID] = {}
        if recovered:
            rows = await self.hub.store.find_started(
                [(job.workflow, job.transaction_id(tick)) for job, tick in items]
            )
            existing = {(r["workflow"], r["transaction_id"]): r["id"] for r in rows}

        async def one(job: ScheduledJob, tick: datetime) -> _Outcome:
            tx = job.transaction_id(tick)
            found = existing.get((job.workflow, tx))
            if found is not None:
                return job.name, tick, found, None, False
            try:
                run = await self.hub.start(
                    job.workflow, await job.input_for(tick), transaction_id=tx, wait=False,
                    raise_on_error=False, trigger=job.trigger(tick), once=True,
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                final = isinstance(exc, _FINAL_ERRORS)
                log.error("schedule_start_failed", job=job.name, tick=tick_id(tick),
                          workflow=job.workflow, error=repr(exc)[:500], retry=not final)
                return job.name, tick, None, repr(exc)[:2000], final
            return job.name, tick, uuid.UUID(run.id), None, False

        outcomes: list[_Outcome] = []
        for i in range(0, len(items), 100):  # concurrent starts share the hub's batched insert
            chunk: list[Awaitable[_Outcome]] = [one(job, tick) for job, tick in items[i:i + 100]]
            outcomes += await asyncio.gather(*chunk)
        await self.hub.store.schedule_mark_started(
            outcomes, self.max_start_attempts, self.recover_after
        )
        started: list[tuple[str, datetime]] = []
        for name, tick, execution_id, error, _ in outcomes:
            if execution_id is None or error is not None:
                continue
            started.append((name, tick))
            log.info("schedule_tick_fired", job=name, tick=tick_id(tick),
                     workflow=self._jobs[name].workflow, execution_id=str(execution_id),
                     **({"recovered": True} if recovered else {}))
        self.fired += len(started)
        return started

    # -- reading and operating -----------------------------------------------------------
    async def jobs(self) -> list[dict[str, Any]]:
        """Every job, for the API and the CLI: its definition here and its stored state.

        Jobs stored by other deployments but not defined in this process are listed too,
        with ``defined: False``. Times are aware UTC datetimes, ids strings.
        """
        stored = {r["job"]: r for r in await self.hub.store.schedule_jobs()}
        defined = {j.name: j for j in self.registry.all()}
        out: list[dict[str, Any]] = []
        for name in sorted({*defined, *stored}):
            row = stored.get(name, {})
            job = defined.get(name)
            last_exec = row.get("last_execution_id")
            out.append({
                "name": name,
                "cron": job.cron if job else row.get("cron"),
                "timezone": job.timezone if job else row.get("timezone"),
                "workflow": job.workflow if job else row.get("workflow"),
                "misfire": job.misfire if job else row.get("misfire"),
                "paused": bool(row.get("paused", False)),
                "next_tick": row.get("next_tick"),
                "last_tick": row.get("last_tick"),
                "last_fired_at": row.get("last_fired_at"),
                "last_execution_id": str(last_exec) if last_exec is not None else None,
                "last_error": row.get("last_error"),
                "defined": job is not None,
            })
        return out

    async def pause(self, name: str) -> None:
        """Stop firing ``name`` on every replica until :meth:`resume`."""
        if not await self.hub.store.schedule_set_paused(name, True):
            raise DefinitionError(f"no stored scheduled job named {name!r}")
        log.info("schedule_paused", job=name)

    async def resume(self, name: str) -> None:
        """Fire ``name`` again from its next tick after now: paused ticks are not missed
        (so this needs the job's definition, to compute that tick)."""
        job = self.registry.get(name)
        next_tick = job.schedule.next_after(self._now())
        if not await self.hub.store.schedule_set_paused(name, False, next_tick):
            raise DefinitionError(f"no stored scheduled job named {name!r}")
        log.info("schedule_resumed", job=name, next_tick=tick_id(next_tick))
        self.wake()
