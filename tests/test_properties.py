"""Property tests: random workflow graphs with random failures, checked against a journal.

Hypothesis draws a graph *shape* (stages of one step or a ``parallelize`` of 2-3 steps, each
step with or without a compensation, some with ``no_compensation``, some with retryable
failures they recover from, at most one that fails for good). A workflow is defined for the
shape (the composer runs at definition time, so each example registers a uniquely named one),
run, and checked:

* nothing fails: the run succeeds, every step completes exactly once, nothing is compensated;
* a step fails: the run is compensated, and the compensations are exactly the completed
  compensable steps, each once, in the reverse of the order in which the step functions
  returned, all after the last completion; nothing after the failing stage starts;
* the stored run agrees with the one ``run()`` returned.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from hub import Hub, Run, RunStatus, StepState
from tests.workflows.random_graphs import (
    FailMode,
    GraphShape,
    Journal,
    StepSpec,
    build_workflow,
)

MAX_EXAMPLES = 40
RUN_TIMEOUT = 60.0
INPUT = {"order": "o-1", "amount": 42}


# -- strategies ----------------------------------------------------------------------------
PAUSES = st.lists(st.sampled_from([0.0, 0.0, 0.001, 0.004]), max_size=3).map(tuple)


@st.composite
def step_specs(draw: st.DrawFn, step_id: str) -> StepSpec:
    max_retries = draw(st.integers(0, 2))
    return StepSpec(
        id=step_id,
        compensation=draw(st.sampled_from(["compensate", "compensate", "none", "no_compensation"])),
        max_retries=max_retries,
        # up to max_retries failures: the last allowed retry must still be made
        transient=draw(st.integers(0, max_retries)),
        transient_kind=draw(st.sampled_from(["step_error", "connector_error", "runtime_error"])),
        sync=draw(st.booleans()),
        pauses=draw(PAUSES),
    )


@st.composite
def graph_shapes(draw: st.DrawFn) -> GraphShape:
    sizes = draw(
        st.lists(st.one_of(st.just(1), st.integers(2, 3)), min_size=1, max_size=5)
    )
    n = sum(sizes)
    specs = [draw(step_specs(f"s{i}")) for i in range(n)]
    failing = draw(st.none() | st.integers(0, n - 1))
    if failing is not None:
        mode: FailMode = draw(st.sampled_from(["raise", "response"]))
        specs[failing] = dataclasses.replace(specs[failing], fail=mode)
    stages: list[tuple[StepSpec, ...]] = []
    it = iter(specs)
    for size in sizes:
        stages.append(tuple(next(it) for _ in range(size)))
    return GraphShape(tuple(stages))


# -- invariants ----------------------------------------------------------------------------
def assert_stored_matches(run: Run, stored: Run) -> None:
    assert stored.id == run.id
    assert stored.workflow == run.workflow
    assert stored.status == run.status
    assert stored.phase == run.phase
    assert stored.result == run.result
    assert stored.error == run.error
    assert stored.steps == run.steps


def check_run(shape: GraphShape, journal: Journal, run: Run) -> None:
    """Every invariant a finished run of ``shape`` must satisfy, given what the steps did."""
    by_id = {s.id: s for s in shape.steps}
    returned = journal.ids("return")
    compensated = journal.ids("compensate")

    assert len(returned) == len(set(returned)), "a step completed more than once"
    for s in shape.steps:
        # an invoked step's attempts are the engine's count of its invocations
        if journal.count("invoke", s.id):
            assert run.steps[s.id].attempts == journal.count("invoke", s.id), s.id
        assert journal.count("raise", s.id) <= s.transient, s.id

    failing = shape.failing
    if failing is None:
        assert run.status == RunStatus.SUCCEEDED, run.error
        assert run.phase == "forward"
        assert run.error is None
        for s in shape.steps:
            assert journal.count("return", s.id) == 1, s.id
            assert journal.count("raise", s.id) == s.transient, s.id
            assert journal.count("invoke", s.id) == s.transient + 1, s.id
            assert run.steps[s.id].state == StepState.DONE, s.id
            assert run.steps[s.id].attempts == s.transient + 1, s.id
        assert compensated == []
        assert run.result == {s.id: {"step": s.id, "input": INPUT} for s in shape.steps}
        return

    assert run.status == RunStatus.COMPENSATED, (run.status, run.error)
    assert run.phase == "compensating"
    assert run.error is not None and run.error["step"] == failing.id, run.error
    assert run.result is None

    # the failing step: its retryable failures, then one permanent failure, never a success
    assert journal.count("raise", failing.id) == failing.transient
    assert journal.count("fail", failing.id) == 1
    assert journal.count("return", failing.id) == 0
    assert journal.count("invoke", failing.id) == failing.transient + 1
    assert run.steps[failing.id].state == StepState.PERMANENT_FAILURE
    assert run.steps[failing.id].attempts == failing.transient + 1

    failed_stage = shape.stage_of(failing.id)
    for s in shape.steps:
        stage = shape.stage_of(s.id)
        if stage < failed_stage:
            assert journal.count("return", s.id) == 1, f"{s.id} precedes the failure"
        elif stage > failed_stage:
            assert journal.count("invoke", s.id) == 0, f"{s.id} started after the failure"
            assert run.steps[s.id].state == StepState.NOT_STARTED, s.id
        elif s is not failing:
            # a sibling of the failing step in its parallelize: started with it; it either
            # completed (the engine lets in-flight steps land) or is left awaiting a retry
            assert journal.count("invoke", s.id) >= 1, s.id
            if s.id not in returned:
                assert [k for k, x in journal.events if x == s.id][-1] == "raise", s.id
                assert run.steps[s.id].state == StepState.TEMP_FAILURE, s.id

    # compensations: exactly the completed compensable steps, each once, newest first
    expected = [sid for sid in reversed(returned) if by_id[sid].compensable]
    assert compensated == expected, (
        f"compensated {compensated}, expected the reverse of completion order {expected} "
        f"(completions: {returned})"
    )
    for sid in compensated:
        assert journal.compensate_inputs[sid] == [{"undo": sid}], sid
    if compensated:
        assert max(journal.positions("return")) < min(journal.positions("compensate")), (
            "a compensation ran before every in-flight step had landed"
        )

    for sid in returned:
        want = StepState.REVERTED if by_id[sid].compensable else StepState.DONE
        assert run.steps[sid].state == want, (sid, run.steps[sid].state)


async def run_shape(hub: Hub, shape: GraphShape, prefix: str = "prop") -> tuple[Journal, Run]:
    journal = Journal()
    wf = build_workflow(shape, journal, prefix)
    run = await wf(hub).run(input=INPUT, raise_on_error=False, timeout=RUN_TIMEOUT)
    try:
        check_run(shape, journal, run)
        assert_stored_matches(run, await hub.get_run(run.id))
    except AssertionError as exc:
        exc.add_note(f"shape: {shape.describe()}")
        exc.add_note(f"journal: {journal.events}")
        exc.add_note(f"run: {run.status}; steps: { {k: v.state for k, v in run.steps.items()} }")
        raise
    return journal, run


# -- the property ----------------------------------------------------------------------------
# ENGINE BUG (pinned; see test_parallel_siblings_compensate_in_reverse_completion_order): two
# parallel siblings that land in the same wake-up of the executor get their completion `seq`
# in launch order, not in the order they returned, so they are compensated in the wrong
# order. s1 is launched first but yields twice; s2 returns first; then s3 fails.
TIE_SHAPE = GraphShape((
    (StepSpec("s0"),),
    (StepSpec("s1", pauses=(0.0, 0.0)), StepSpec("s2")),
    (StepSpec("s3", fail="raise"),),
))


@pytest.fixture
def examples() -> Iterator[list[str]]:
    """Outcomes of the examples the property ran; a property that ran none is worthless."""
    seen: list[str] = []
    yield seen
    if "failed" in seen:
        return  # the failure is the report; the counts below would only add noise
    assert len(seen) >= MAX_EXAMPLES, f"hypothesis ran only {len(seen)} examples"
    assert {RunStatus.SUCCEEDED, RunStatus.COMPENSATED} <= set(seen), seen


@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
    database=None,  # no example database in the work tree; failures print a blob instead
    print_blob=True,
)
@given(shape=graph_shapes())
@example(shape=TIE_SHAPE)  # fails until the engine bug above is fixed
async def test_random_graphs_compensate_exactly_the_completed_steps_in_reverse(
    hub: Hub, examples: list[str], shape: GraphShape
) -> None:
    try:
        _, run = await run_shape(hub, shape)
    except BaseException:
        examples.append("failed")
        raise
    examples.append(run.status)


async def test_parallel_siblings_compensate_in_reverse_completion_order(hub: Hub) -> None:
    """ENGINE BUG, pinned: fails until ``Executor._loop`` handles landed steps in the order
    they finished. Completions are s0, s2, s1 (s1 was launched first but yields twice, so both
    land in one wake-up); compensations must be s1, s2, s0, the engine runs s2, s1, s0."""
    journal, run = await run_shape(hub, TIE_SHAPE, prefix="tie")
    assert run.status == RunStatus.COMPENSATED
    assert journal.ids("compensate") == list(reversed(journal.ids("return")))


# -- failure at every position of a linear workflow ----------------------------------------
LINEAR_CASES: list[Any] = [pytest.param(None, None, id="no-failure")] + [
    pytest.param(k, mode, id=f"fail-s{k}-{mode}")
    for k in range(5)
    for mode in ("raise", "response")
]


@pytest.mark.parametrize(("k", "mode"), LINEAR_CASES)
async def test_failure_injected_at_every_position_compensates_in_reverse_order(
    hub: Hub, k: int | None, mode: FailMode | None
) -> None:
    shape = GraphShape(tuple(
        (StepSpec(f"s{i}", fail=mode if i == k else None),) for i in range(5)
    ))
    journal, run = await run_shape(hub, shape, prefix="linear")
    if k is None:
        assert run.status == RunStatus.SUCCEEDED
        assert journal.ids("return") == ["s0", "s1", "s2", "s3", "s4"]
        assert journal.ids("compensate") == []
        return
    assert run.status == RunStatus.COMPENSATED
    assert journal.ids("return") == [f"s{i}" for i in range(k)]
    assert journal.ids("compensate") == [f"s{i}" for i in reversed(range(k))]
    assert [run.steps[f"s{i}"].state for i in range(5)] == (
        [StepState.REVERTED] * k + [StepState.PERMANENT_FAILURE]
        + [StepState.NOT_STARTED] * (4 - k)
    )
