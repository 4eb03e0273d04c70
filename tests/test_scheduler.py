"""Scheduled jobs: each tick once across replicas, misfires, crash recovery, DST.

Time comes from a fake clock that the tests move, so ticks are exact and tests are fast: the
scheduler compares ticks with its clock only, and real time only decides crash-recovery
deadlines (which the tests set to zero or a fraction of a second).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pydantic import BaseModel

from hub import DefinitionError, Hub, WorkflowResponse, create_step, create_workflow
from hub.runtime.scheduler import CronSchedule, Scheduler, ScheduleRegistry, scheduled

# -- workflows the jobs start ----------------------------------------------------------


@create_workflow("sched-echo")
def sched_echo(inp: Any) -> WorkflowResponse:
    return WorkflowResponse(create_step("sched-echo-step", lambda i, _c: i)(inp))


@create_workflow("sched-echo-again", idempotent=False)
def sched_echo_again(inp: Any) -> WorkflowResponse:
    return WorkflowResponse(create_step("sched-echo-again-step", lambda i, _c: i)(inp))


class Sku(BaseModel):
    sku: str


@create_workflow("sched-typed")
def sched_typed(inp: Sku) -> WorkflowResponse:
    return WorkflowResponse(create_step("sched-typed-step", lambda i, _c: i)(inp))


class FakeClock:
    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def set(self, when: datetime) -> None:
        self.now = when


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


async def wait_until(pred: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await pred():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


async def executions(hub: Hub, job: str) -> Counter[str]:
    """Executions per transaction id of ``job`` (archived ones too)."""
    recs = await hub.store.pool.fetch(
        f"SELECT transaction_id, count(*) AS n FROM {hub.store.schema}.execution "
        "WHERE transaction_id LIKE $1 GROUP BY transaction_id", f"schedule:{job}:%")
    return Counter({r["transaction_id"]: r["n"] for r in recs})


def spy_starts(hub: Hub, calls: Counter[str]) -> None:
    """Count ``hub.start`` calls per transaction id (how often a tick was *fired*, which is
    stronger than counting executions: those are deduplicated by the transaction id anyway)."""
    original = hub.start

    async def start(workflow: str, input: Any = None, **kw: Any) -> Any:
        calls[kw["transaction_id"]] += 1
        return await original(workflow, input, **kw)

    hub.start = start  # type: ignore[method-assign]


@pytest.fixture
async def second_hub(dsn: str, schema: str) -> AsyncIterator[Hub]:
    """Another replica on the same schema (starts executions; the first hub runs them)."""
    async with Hub(dsn, schema=schema, execute=False, lease_seconds=2.0,
                   poll_interval=0.5) as h:
        yield h


# -- definitions -------------------------------------------------------------------------


@pytest.mark.parametrize(("kwargs", "field", "detail"), [
    ({"cron": "61 * * * *"}, "cron", "out of range"),
    ({"cron": "every day"}, "cron", "five fields"),
    ({"cron": "*/5 * * * * *"}, "cron", "seconds"),
    ({"cron": "0 0 31 2 *"}, "cron", "never matches"),
    ({"cron": "R 2 * * *"}, "cron", "random"),
    ({"timezone": "Mars/Olympus_Mons"}, "timezone", "IANA"),
    ({"timezone": "../etc/passwd"}, "timezone", "IANA"),
    ({"misfire": "twice"}, "misfire", "once, all, skip"),
    ({"workflow": 42}, "workflow", "neither"),
])
def test_bad_definitions_fail_at_import_naming_job_and_field(
    kwargs: dict[str, Any], field: str, detail: str
) -> None:
    args: dict[str, Any] = {"cron": "0 2 * * *", "name": "nightly", "workflow": "sched-echo",
                            "registry": ScheduleRegistry(), **kwargs}
    cron = args.pop("cron")
    with pytest.raises(DefinitionError) as err:
        scheduled(cron, **args)
    message = str(err.value)
    assert "'nightly'" in message and f"bad {field}" in message and detail in message, message


def test_bad_name_and_input_functions() -> None:
    reg = ScheduleRegistry()
    with pytest.raises(DefinitionError, match="job name 'a b'"):
        scheduled("0 2 * * *", name="a b", workflow="sched-echo", registry=reg)
    with pytest.raises(DefinitionError, match="takes one argument"):
        scheduled("0 2 * * *", name="x", workflow="sched-echo", registry=reg,
                  input=lambda a, b: {})
    job = scheduled("0 2 * * *", name="y", workflow="sched-echo", registry=reg, input={"a": 1})
    with pytest.raises(DefinitionError, match="input is given twice"):
        job(lambda tick: {})


async def test_decorator_form_and_workflow_definition() -> None:
    reg = ScheduleRegistry()

    @scheduled("*/5 * * * *", name="stock-reconcile", workflow=sched_echo,
               timezone="Europe/Berlin", registry=reg)
    def make_input(tick: datetime) -> dict[str, Any]:
        return {"day": tick.date().isoformat(), "hour": tick.hour}

    assert callable(make_input) and make_input.__name__ == "make_input"
    job = reg.get("stock-reconcile")
    assert job.workflow == "sched-echo" and job.input is make_input
    assert job.cron == "*/5 * * * *" and job.misfire == "once"
    # the function sees the tick in the job's timezone
    assert await job.input_for(at("2025-01-05T23:30:00")) == {"day": "2025-01-06", "hour": 0}
    assert job.transaction_id(at("2025-01-05T23:30:00")) == (
        "schedule:stock-reconcile:2025-01-05T23:30:00+00:00")
    assert scheduled("@daily", name="d", workflow="w", registry=reg).cron == "0 0 * * *"


def test_dst_europe_berlin() -> None:
    berlin = ZoneInfo("Europe/Berlin")

    def ticks(expr: str, after: str, n: int) -> list[str]:
        s = CronSchedule(CronSchedule.normalize(expr), berlin)
        t, out = at(after), []
        for _ in range(n):
            t = s.next_after(t)
            out.append(t.strftime("%m-%d %H:%M"))
        return out

    # March 30 2025: 02:00 CET does not exist; the run happens when it would have, 03:00 CEST
    assert ticks("0 2 * * *", "2025-03-28T12:00:00", 4) == [
        "03-29 01:00", "03-30 01:00", "03-31 00:00", "04-01 00:00"]
    # October 26 2025: 02:00 happens twice; a fixed-time job runs at the first only
    assert ticks("0 2 * * *", "2025-10-25T12:00:00", 3) == [
        "10-26 00:00", "10-27 01:00", "10-28 01:00"]
    # jobs with a wildcard hour or minute keep their rhythm in real time, in both directions
    assert ticks("*/30 * * * *", "2025-03-30T00:00:00", 4) == [
        "03-30 00:30", "03-30 01:00", "03-30 01:30", "03-30 02:00"]
    assert ticks("0 * * * *", "2025-10-25T23:00:00", 4) == [
        "10-26 00:00", "10-26 01:00", "10-26 02:00", "10-26 03:00"]
    # a long backlog is walked from its end: only what is returned costs
    every_minute = CronSchedule("* * * * *", ZoneInfo("UTC"))
    latest, more = every_minute.between(at("2024-01-01T00:00:00"), at("2025-01-01T00:00:00"), 3)
    assert more and [t.strftime("%H:%M") for t in latest] == ["00:00", "23:59", "23:58"]


# -- firing ------------------------------------------------------------------------------


async def test_dst_ticks_fire_at_the_right_instants(hub: Hub) -> None:
    reg = ScheduleRegistry()
    scheduled("0 2 * * *", name="berlin", workflow="sched-echo", timezone="Europe/Berlin",
              registry=reg, input=lambda tick: {"local": tick.isoformat()})
    clock = FakeClock(at("2025-03-28T12:00:00"))
    sched = Scheduler(hub, reg, clock=clock, misfire_grace=60)
    await sched.sync()
    fired = []
    for instant in ("2025-03-29T01:00:00", "2025-03-30T01:00:00", "2025-03-31T00:00:00"):
        clock.set(at(instant) - timedelta(seconds=1))
        assert await sched.run_once() == []
        clock.set(at(instant))
        fired += await sched.run_once()
    assert [t.isoformat() for _, t in fired] == [
        "2025-03-29T01:00:00+00:00", "2025-03-30T01:00:00+00:00", "2025-03-31T00:00:00+00:00"]
    rows = await hub.store.get_by_transaction("schedule:berlin:2025-03-30T01:00:00+00:00",
                                              "sched-echo")
    assert rows[0]["input"] == {"local": "2025-03-30T03:00:00+02:00"}
    assert rows[0]["trigger"] == {"kind": "schedule", "job": "berlin",
                                  "tick": "2025-03-30T01:00:00+00:00"}


async def test_two_schedulers_fire_each_tick_exactly_once(hub: Hub, second_hub: Hub) -> None:
    reg = ScheduleRegistry()
    scheduled("*/5 * * * *", name="every5", workflow="sched-echo", registry=reg,
              input=lambda tick: {"tick": tick.isoformat()})
    scheduled("*/5 * * * *", name="catchup", workflow="sched-echo", registry=reg,
              misfire="all", input={"n": 1})
    calls: Counter[str] = Counter()
    spy_starts(hub, calls)
    spy_starts(second_hub, calls)
    clock = FakeClock(at("2025-01-06T10:00:30"))
    scheds = [Scheduler(h, reg, clock=clock, poll_interval=0.02, misfire_grace=60)
              for h in (hub, second_hub)]
    async with scheds[0], scheds[1]:
        for i in range(1, 7):
            clock.set(at("2025-01-06T10:00:00") + timedelta(minutes=5 * i))
            await wait_until(lambda i=i: _started(hub, i * 2))
        # a downtime of both jobs' worth of ticks: "all" fires each late tick once, "once" one
        clock.set(at("2025-01-06T11:02:00"))
        await wait_until(lambda: _started(hub, 6 * 2 + 6 + 1))
        await asyncio.sleep(0.2)  # let any double fire show
    assert all(n == 1 for n in calls.values()), calls
    assert sum(calls.values()) == 19 == scheds[0].fired + scheds[1].fired
    per_tx = await executions(hub, "every5") + await executions(hub, "catchup")
    assert len(per_tx) == 19 and set(per_tx.values()) == {1}
    assert "schedule:every5:2025-01-06T11:00:00+00:00" in per_tx
    assert "schedule:every5:2025-01-06T10:55:00+00:00" not in per_tx  # once: latest only
    assert "schedule:catchup:2025-01-06T10:35:00+00:00" in per_tx


async def test_racing_passes_claim_each_tick_once(hub: Hub, second_hub: Hub) -> None:
    """Six schedulers on two hubs run their passes at the same instant, tick after tick."""
    reg = ScheduleRegistry()
    for name in ("race-a", "race-b", "race-c"):
        scheduled("* * * * *", name=name, workflow="sched-echo", registry=reg, input={})
    calls: Counter[str] = Counter()
    spy_starts(hub, calls)
    spy_starts(second_hub, calls)
    clock = FakeClock(at("2025-01-06T10:00:30"))
    scheds = [Scheduler(h, reg, clock=clock, misfire_grace=60)
              for h in (hub, second_hub) for _ in range(3)]
    for s in scheds:
        await s.sync()
    for minute in range(1, 11):
        clock.set(at("2025-01-06T10:00:00") + timedelta(minutes=minute))
        await asyncio.gather(*(s.run_once() for s in scheds))
    assert len(calls) == 30 and set(calls.values()) == {1}, calls
    assert sum(s.fired for s in scheds) == 30
    for name in ("race-a", "race-b", "race-c"):
        assert sorted((await executions(hub, name)).values()) == [1] * 10


async def _started(hub: Hub, n: int) -> bool:
    count = await hub.store.pool.fetchval(
        f"SELECT count(*) FROM {hub.store.schema}.schedule_tick WHERE execution_id IS NOT NULL")
    return bool(count >= n)


@pytest.mark.parametrize(("misfire", "max_catch_up", "expected"), [
    ("once", 1000, ["15:00"]),
    ("all", 1000, ["11:00", "12:00", "13:00", "14:00", "15:00"]),
    ("all", 3, ["13:00", "14:00", "15:00"]),
    ("skip", 1000, []),
])
async def test_misfire_policy_after_downtime(
    hub: Hub, misfire: str, max_catch_up: int, expected: list[str]
) -> None:
    reg = ScheduleRegistry()
    scheduled("0 * * * *", name="hourly", workflow="sched-echo", registry=reg,
              misfire=misfire, input={})  # type: ignore[arg-type]
    clock = FakeClock(at("2025-01-06T10:00:30"))
    await Scheduler(hub, reg, clock=clock).sync()  # deployed; next tick 11:00; then down
    clock.set(at("2025-01-06T15:10:00"))  # back up: 11:00 ... 15:00 passed, all late
    restarted = Scheduler(hub, reg, clock=clock, misfire_grace=60, max_catch_up=max_catch_up)
    await restarted.sync()
    fired = await restarted.run_once()
    assert [t.strftime("%H:%M") for _, t in fired] == expected
    assert sorted(await executions(hub, "hourly")) == [
        f"schedule:hourly:2025-01-06T{hm}:00+00:00" for hm in expected]
    [job] = await restarted.jobs()
    assert job["next_tick"] == at("2025-01-06T16:00:00")
    assert job["last_tick"] == (at(f"2025-01-06T{expected[-1]}:00") if expected else None)
    # back to normal: the next tick is on time and fires whatever the policy
    clock.set(at("2025-01-06T16:00:20"))
    assert [t.strftime("%H:%M") for _, t in await restarted.run_once()] == ["16:00"]


async def test_restart_keeps_next_tick_and_a_new_cron_starts_fresh(hub: Hub) -> None:
    reg = ScheduleRegistry()
    scheduled("0 * * * *", name="moving", workflow="sched-echo", registry=reg)
    clock = FakeClock(at("2025-01-06T10:00:30"))
    await Scheduler(hub, reg, clock=clock).sync()
    clock.set(at("2025-01-06T12:30:00"))
    sched = Scheduler(hub, reg, clock=clock)
    await sched.sync()
    assert (await sched.jobs())[0]["next_tick"] == at("2025-01-06T11:00:00")  # kept
    reg2 = ScheduleRegistry()
    scheduled("45 * * * *", name="moving", workflow="sched-echo", registry=reg2)
    sched2 = Scheduler(hub, reg2, clock=clock)
    await sched2.sync()
    assert (await sched2.jobs())[0]["next_tick"] == at("2025-01-06T12:45:00")  # from now
    # the replica still on the old definition leaves the job alone (rolling deploy)
    clock.set(at("2025-01-06T13:00:00"))
    assert await sched.run_once() == []
    clock.set(at("2025-01-06T12:45:00"))
    assert len(await sched2.run_once()) == 1


async def test_crash_between_claim_and_start_is_recovered(hub: Hub) -> None:
    reg = ScheduleRegistry()
    scheduled("0 * * * *", name="crashy", workflow="sched-echo", registry=reg, input={"k": 1})
    clock = FakeClock(at("2025-01-06T10:00:30"))
    never = asyncio.Event()
    original = hub.start

    async def hang(*_a: Any, **_kw: Any) -> Any:
        await never.wait()

    crashing = Scheduler(hub, reg, clock=clock, recover_after=0.3)
    await crashing.sync()
    clock.set(at("2025-01-06T11:00:01"))
    hub.start = hang  # type: ignore[method-assign]
    task = asyncio.create_task(crashing.run_once())
    await wait_until(lambda: _claimed(hub))
    task.cancel()  # the process dies after the claim committed, before the start
    with pytest.raises(asyncio.CancelledError):
        await task
    hub.start = original  # type: ignore[method-assign]
    assert await executions(hub, "crashy") == Counter()

    survivor = Scheduler(hub, reg, clock=clock, recover_after=0.3)
    await survivor.sync()
    assert await survivor.run_once() == []  # the claimer might still be alive: not yet
    await asyncio.sleep(0.35)
    fired = await survivor.run_once()
    assert [t for _, t in fired] == [at("2025-01-06T11:00:00")]
    assert await executions(hub, "crashy") == Counter(
        {"schedule:crashy:2025-01-06T11:00:00+00:00": 1})
    [tick] = await hub.store.schedule_ticks("crashy")
    assert tick["execution_id"] is not None and tick["retry_at"] is None
    assert (await survivor.jobs())[0]["last_execution_id"] == str(tick["execution_id"])
    assert await survivor.run_once() == []


async def _claimed(hub: Hub) -> bool:
    return bool(await hub.store.schedule_ticks("crashy"))


async def test_crash_after_start_before_marking_starts_nothing_twice(hub: Hub) -> None:
    """The claimer started the run (of a non-idempotent workflow, which even finished) and
    died before recording it: recovery finds that run instead of starting another."""
    reg = ScheduleRegistry()
    job = scheduled("0 * * * *", name="half", workflow="sched-echo-again", registry=reg,
                    input={"k": 2})
    clock = FakeClock(at("2025-01-06T10:00:30"))
    sched = Scheduler(hub, reg, clock=clock, recover_after=0.0)
    await sched.sync()
    tick = at("2025-01-06T11:00:00")
    clock.set(tick)
    advanced, claimed = await hub.store.schedule_claim(
        [("half", tick, at("2025-01-06T12:00:00"), tick)], [("half", tick)], 0.0)
    assert advanced == {"half"} and claimed == [("half", tick)]
    run = await hub.start("sched-echo-again", {"k": 2}, transaction_id=job.transaction_id(tick),
                          trigger=job.trigger(tick))
    assert run.finished
    assert len(await sched.run_once()) == 1
    assert await executions(hub, "half") == Counter({job.transaction_id(tick): 1})
    [row] = await hub.store.schedule_ticks("half")
    assert str(row["execution_id"]) == run.id


async def test_a_slow_claimer_racing_the_recovery_still_fires_once(
        hub: Hub, monkeypatch: pytest.MonkeyPatch) -> None:
    """The claimer was slow, not dead: recovery looked for its run before it existed, and the
    claimer's run (non-idempotent, and finished by now) lands before recovery starts its own.
    The tick's start is keyed by the tick (``once``): recovery finds it, runs nothing."""
    reg = ScheduleRegistry()
    job = scheduled("0 * * * *", name="slowpoke", workflow="sched-echo-again", registry=reg,
                    input={"k": 3})
    clock = FakeClock(at("2025-01-06T10:00:30"))
    sched = Scheduler(hub, reg, clock=clock, recover_after=0.0)
    await sched.sync()
    tick = at("2025-01-06T11:00:00")
    clock.set(tick)
    await hub.store.schedule_claim(
        [("slowpoke", tick, at("2025-01-06T12:00:00"), tick)], [("slowpoke", tick)], 0.0)
    real_find = hub.store.find_started

    async def look_then_the_claimer_starts(keys: Any) -> list[Any]:
        monkeypatch.setattr(hub.store, "find_started", real_find)
        found = await real_find(keys)  # nothing yet ...
        await hub.start("sched-echo-again", {"k": 3}, transaction_id=job.transaction_id(tick),
                        trigger=job.trigger(tick), once=True)  # ... then the claimer's lands
        return found

    monkeypatch.setattr(hub.store, "find_started", look_then_the_claimer_starts)
    assert len(await sched.run_once()) == 1
    assert await executions(hub, "slowpoke") == Counter({job.transaction_id(tick): 1})


async def test_failed_start_is_retried_then_given_up_visibly(hub: Hub) -> None:
    reg = ScheduleRegistry()
    failures = {"flaky": 1, "broken": 99}

    def make_input(name: str) -> Callable[[datetime], dict[str, Any]]:
        def build(tick: datetime) -> dict[str, Any]:
            if failures[name] > 0:
                failures[name] -= 1
                raise ConnectionError(f"{name}: lookup failed")
            return {"ok": True}
        return build

    for name in failures:
        scheduled("0 * * * *", name=name, workflow="sched-echo", registry=reg,
                  input=make_input(name))
    scheduled("0 * * * *", name="invalid", workflow="sched-typed", registry=reg,
              input={"sku": None})
    clock = FakeClock(at("2025-01-06T10:00:30"))
    sched = Scheduler(hub, reg, clock=clock, recover_after=0.0, max_start_attempts=3)
    await sched.sync()
    clock.set(at("2025-01-06T11:00:00"))
    assert await sched.run_once() == []
    [flaky] = await hub.store.schedule_ticks("flaky")
    assert flaky["execution_id"] is None and "lookup failed" in flaky["error"]
    assert [n for n, _ in await sched.run_once()] == ["flaky"]  # retried once due
    await sched.run_once()
    assert await sched.run_once() == []
    [invalid] = await hub.store.schedule_ticks("invalid")  # retrying cannot help: no retry
    assert invalid["attempts"] == 1 and invalid["retry_at"] is None
    assert "InputValidationError" in invalid["error"]
    [broken] = await hub.store.schedule_ticks("broken")
    assert broken["attempts"] == 3 and broken["retry_at"] is None  # given up, not hidden
    listed = {j["name"]: j for j in await sched.jobs()}
    assert "lookup failed" in listed["broken"]["last_error"]
    assert listed["flaky"]["last_error"] is None and listed["flaky"]["last_execution_id"]


async def test_jobs_listing_pause_and_resume(hub: Hub) -> None:
    reg = ScheduleRegistry()
    scheduled("30 2 * * *", name="nightly", workflow="sched-echo", registry=reg,
              timezone="Europe/Berlin", misfire="all")
    clock = FakeClock(at("2025-01-06T10:00:00"))
    sched = Scheduler(hub, reg, clock=clock)
    await sched.sync()
    [job] = await sched.jobs()
    assert job == {
        "name": "nightly", "cron": "30 2 * * *", "timezone": "Europe/Berlin",
        "workflow": "sched-echo", "misfire": "all", "paused": False,
        "next_tick": at("2025-01-07T01:30:00"), "last_tick": None, "last_fired_at": None,
        "last_execution_id": None, "last_error": None, "defined": True,
    }
    await sched.pause("nightly")
    clock.set(at("2025-01-09T12:00:00"))
    assert await sched.run_once() == []
    await sched.resume("nightly")  # paused ticks are not missed ones: none fires
    assert await sched.run_once() == []
    [job] = await sched.jobs()
    assert job["next_tick"] == at("2025-01-10T01:30:00") and not job["paused"]
    # a job stored by another deployment shows up, marked as not defined here
    other = Scheduler(hub, ScheduleRegistry(), clock=clock)
    assert [(j["name"], j["defined"], j["cron"]) for j in await other.jobs()] == [
        ("nightly", False, "30 2 * * *")]


async def test_unknown_workflow_fails_at_start(hub: Hub) -> None:
    reg = ScheduleRegistry()
    scheduled("0 * * * *", name="orphan", workflow="no-such-workflow", registry=reg)
    with pytest.raises(DefinitionError, match="'orphan': workflow 'no-such-workflow'"):
        await Scheduler(hub, reg).start()


async def test_idle_scheduler_sends_one_statement_per_poll(dsn: str, schema: str) -> None:
    reg = ScheduleRegistry()
    scheduled("0 2 * * *", name="quiet", workflow="sched-echo", registry=reg)
    async with Hub(dsn, schema=schema, execute=False) as h:
        sched = Scheduler(h, reg, clock=FakeClock(at("2025-01-06T10:00:00")),
                          poll_interval=0.1)
        async with sched:
            await asyncio.sleep(0.05)
            before = h.store.statements
            await asyncio.sleep(1.0)
            sent = h.store.statements - before
    assert 5 <= sent <= 12, sent
