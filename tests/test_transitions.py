"""The transition core on its own: typed state + event + time -> change; no Postgres, no loop.

The property test drives random graphs of sequential layers and parallel groups (fan-outs)
through random landing orders, retries and one failure, and checks invariant 6: completed
steps are compensated in exact reverse order of completion, each once, and none that did not
complete.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hub.engine.graph import Graph, StepNode, StepOptions
from hub.engine.run import RunStatus, StepState
from hub.engine.state import ExecState, Failure, Phase, StepRecord
from hub.engine.transitions import (
    CancelRequested,
    Change,
    CompensationSucceeded,
    Context,
    Event,
    StepFailed,
    StepSucceeded,
    TimerDue,
    advance,
)

T0 = 1_000_000.0


def _noop(value: Any, ctx: Any) -> Any:
    return value


def graph(layers: list[list[tuple[str, bool]]], **options: Any) -> Graph:
    """Layers run one after another; the steps of one layer side by side (a fan-out).
    Each step is ``(id, compensable)``."""
    steps: dict[str, StepNode] = {}
    before: tuple[str, ...] = ()
    for layer in layers:
        for step_id, compensable in layer:
            steps[step_id] = StepNode(
                id=step_id, step_name=step_id, input=None, after=before, when=(),
                options=StepOptions(**options), invoke=_noop,
                compensate=_noop if compensable else None)
        before = tuple(s for s, _ in layer)
    return Graph.build("wf", steps, {}, {}, None)


def context(g: Graph) -> Context:
    return Context(graph=g, input=None, workflow="wf", max_payload_bytes=1_000_000)


def fresh() -> ExecState:
    return ExecState(status=RunStatus.PENDING, phase=Phase.FORWARD, steps={})


def boom(step: str) -> Failure:
    return Failure(message="boom", step=step, attempt=1)


def test_first_plan_launches_the_first_layer_and_begins() -> None:
    g = graph([[("a", True), ("b", True)], [("c", True)]])
    change = advance(context(g), fresh(), TimerDue(), T0)
    assert [launch.step for launch in change.launches] == ["a", "b"]
    assert change.state.status == RunStatus.RUNNING
    assert change.events[0] == ("begin", "")
    assert change.state.step("a") == StepRecord(state=StepState.INVOKING, attempts=1,
                                                started_at=T0)


def test_success_records_completion_order_and_next_plan_launches_the_follower() -> None:
    g = graph([[("a", True)], [("b", True)]])
    ctx = context(g)
    state = advance(ctx, fresh(), TimerDue(), T0).state
    done = advance(ctx, state, StepSucceeded("a", {"x": 1}, {"undo": 1}), T0 + 1)
    assert done.steps["a"].state == StepState.DONE and done.steps["a"].seq == 1
    assert done.steps["a"].compensate_input == {"undo": 1}
    nxt = advance(ctx, done.state, TimerDue(), T0 + 1)
    assert [launch.step for launch in nxt.launches] == ["b"]


def test_retry_waits_the_delay_the_error_asked_for_instead_of_the_step_interval() -> None:
    g = graph([[("a", True)]], max_retries=3, retry_interval=200.0)
    ctx = context(g)
    state = advance(ctx, fresh(), TimerDue(), T0).state
    asked = advance(ctx, state, StepFailed("a", boom("a"), retryable=True, retry_after=7.0),
                    T0 + 1)
    assert asked.steps["a"].state == StepState.TEMP_FAILURE
    assert asked.steps["a"].due == T0 + 1 + 7.0
    own = advance(ctx, state, StepFailed("a", boom("a"), retryable=True), T0 + 1)
    assert own.steps["a"].due == T0 + 1 + 200.0


def test_a_due_retry_is_relaunched_only_once_its_time_has_come() -> None:
    g = graph([[("a", True)]], max_retries=3, retry_interval=5.0)
    ctx = context(g)
    state = advance(ctx, fresh(), TimerDue(), T0).state
    state = advance(ctx, state, StepFailed("a", boom("a"), retryable=True), T0).state
    assert advance(ctx, state, TimerDue(), T0 + 4.9).launches == ()
    again = advance(ctx, state, TimerDue(), T0 + 5.0)
    assert [(launch.step, launch.attempt) for launch in again.launches] == [("a", 2)]


def test_a_permanent_failure_starts_compensation_of_what_completed() -> None:
    g = graph([[("a", True)], [("b", True)]])
    ctx = context(g)
    state = advance(ctx, fresh(), TimerDue(), T0).state
    state = advance(ctx, state, StepSucceeded("a"), T0).state
    state = advance(ctx, state, TimerDue(), T0).state
    failed = advance(ctx, state, StepFailed("b", boom("b"), retryable=False), T0)
    assert failed.state.phase == Phase.COMPENSATING
    assert failed.error is not None and failed.error.message == "boom"
    plan = advance(ctx, failed.state, TimerDue(), T0)
    assert [(launch.step, launch.compensating) for launch in plan.launches] == [("a", True)]


def test_cancel_cuts_the_steps_in_flight() -> None:
    g = graph([[("a", True), ("b", False)]])
    ctx = context(g)
    state = advance(ctx, fresh(), TimerDue(), T0).state
    state = advance(ctx, state, CancelRequested("customer asked"), T0).state
    assert state.phase == Phase.CANCELLING
    plan = advance(ctx, state, TimerDue(frozenset({"a", "b"})), T0)
    assert sorted(plan.cut) == ["a", "b"]


def test_an_async_step_times_out_when_its_due_time_passes() -> None:
    g = graph([[("a", True)]], is_async=True, timeout=60.0)
    ctx = context(g)
    state = advance(ctx, fresh(), TimerDue(), T0).state
    state = advance(ctx, state, StepSucceeded("a", None, {"id": "pi_1"}), T0).state
    assert state.step("a").state == StepState.WAITING and state.step("a").due == T0 + 60.0
    timed = advance(ctx, state, TimerDue(), T0 + 60.0)
    assert timed.steps["a"].state == StepState.TIMEOUT
    assert timed.state.phase == Phase.COMPENSATING


def test_stored_records_and_failures_read_back_as_written() -> None:
    failure = Failure(message="m", type="StepTimeout", step="a", attempt=2, retryable=True,
                      compensation_error=Failure(message="n", step="a", compensation=True),
                      extra={"later_key": 1})
    assert Failure.from_json(failure.to_json()) == failure
    rec = StepRecord(state=StepState.COMPENSATING, attempts=2, comp_attempts=1,
                     output={"x": [1]}, compensate_input={"y": 2}, error=failure,
                     started_at=1.5, finished_at=2.5, seq=3, due=9.0, unrecorded=True)
    assert StepRecord.from_json(rec.to_json()) == rec


def test_merged_changes_write_the_latest_record_of_each_step() -> None:
    g = graph([[("a", True)], [("b", True)]])
    ctx = context(g)
    first = advance(ctx, fresh(), TimerDue(), T0)
    second = advance(ctx, first.state, StepSucceeded("a"), T0)
    merged = first.then(second)
    assert merged.steps["a"].state == StepState.DONE
    assert merged.events == first.events + second.events
    assert merged.state is second.state


# -- the property --------------------------------------------------------------------------
@st.composite
def layered_graphs(draw: st.DrawFn) -> list[list[tuple[str, bool]]]:
    n_layers = draw(st.integers(1, 5))
    layers = []
    for i in range(n_layers):
        width = draw(st.integers(1, 4))
        layers.append([(f"s{i}_{j}", draw(st.booleans())) for j in range(width)])
    return layers


def _drive(ctx: Context, data: st.DataObject, fail_at: int) -> tuple[list[str], list[str],
                                                                       ExecState]:
    """Run to the end, landing steps in an order hypothesis picks; the ``fail_at``-th
    landing fails for good (if the run gets that far). Returns the completion order, the
    compensation order and the final state."""
    state, now = fresh(), T0
    running: set[str] = set()
    completed: list[str] = []
    compensated: list[str] = []
    landings = 0
    for _ in range(1000):
        plan = advance(ctx, state, TimerDue(frozenset(running)), now)
        state = plan.state
        running.update(launch.step for launch in plan.launches)
        if state.finished:
            return completed, compensated, state
        if not running:
            now = state.next_due() or now  # only a retry timer can be pending
            continue
        step = data.draw(st.sampled_from(sorted(running)))
        running.discard(step)
        landings += 1
        event: Event
        if state.step(step).state == StepState.COMPENSATING:
            event = CompensationSucceeded(step)
            compensated.append(step)
        elif landings == fail_at:
            event = StepFailed(step, boom(step), retryable=False)
        elif data.draw(st.integers(0, 4)) == 0:
            event = StepFailed(step, boom(step), retryable=True)  # retried later
        else:
            event = StepSucceeded(step, {"step": step})
        change: Change = advance(ctx, state, event, now)
        state = change.state
        if isinstance(event, StepSucceeded):
            completed.append(step)
        now += 1.0
    raise AssertionError("the run did not end")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(layers=layered_graphs(), fail_at=st.integers(1, 25), data=st.data())
def test_completed_steps_compensate_in_exact_reverse_order_of_completion(
    layers: list[list[tuple[str, bool]]], fail_at: int, data: st.DataObject
) -> None:
    g = graph(layers, max_retries=1, retry_interval=1.0)
    compensable = {s for layer in layers for s, c in layer if c}
    completed, compensated, final = _drive(context(g), data, fail_at)
    if final.status == RunStatus.SUCCEEDED:
        assert compensated == []
        return
    assert final.status == RunStatus.COMPENSATED
    assert compensated == [s for s in reversed(completed) if s in compensable]
    assert len(set(compensated)) == len(compensated)
    for step_id, rec in final.steps.items():
        assert (rec.state == StepState.REVERTED) == (step_id in compensated)


def test_a_step_record_but_changes_exactly_the_fields_named() -> None:
    """``but`` is spelled out for speed: a field added to StepRecord and forgotten there
    would be silently reset on every transition; a misspelt field must not pass."""
    import dataclasses

    import pytest

    from hub.engine.state import StepRecord

    base = StepRecord()
    for f in dataclasses.fields(StepRecord):
        marker = object()
        changed = base.but(**{f.name: marker})
        for other in dataclasses.fields(StepRecord):
            expected = marker if other is f else getattr(base, other.name)
            assert getattr(changed, other.name) is expected, (f.name, other.name)
    with pytest.raises(TypeError, match="no field"):
        base.but(attempt=1)
