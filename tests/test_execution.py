"""Execution semantics: retries, failures, compensation, options, idempotent starts."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from pydantic import BaseModel

from hub import (
    ExecutionNotFound,
    Hub,
    InputValidationError,
    PayloadTooLarge,
    PermanentStepError,
    RunStatus,
    StepContext,
    StepResponse,
    UnknownWorkflow,
    WorkflowFailed,
    WorkflowResponse,
    create_step,
    create_workflow,
    parallelize,
    transform,
    when,
)

JOURNAL: list[tuple[str, Any]] = []


@pytest.fixture(autouse=True)
def _clear_journal() -> None:
    JOURNAL.clear()


class Order(BaseModel):
    id: str
    amount: int = 10


def record(name: str, fail: str | None = None) -> Any:
    async def invoke(inp: Any, ctx: StepContext) -> StepResponse[Any]:
        JOURNAL.append(("invoke", name))
        if fail == "permanent":
            raise PermanentStepError(f"{name} refused")
        return StepResponse({"step": name}, {"undo": name})

    return invoke


def undo(name: str) -> Any:
    async def compensate(inp: Any, ctx: StepContext) -> None:
        JOURNAL.append(("compensate", inp))

    return compensate


# -- retries and backoff ----------------------------------------------------------------
FLAKY: dict[str, int] = {}


@create_step("ex-flaky", max_retries=3, retry_interval=0.05, backoff=2.0)
async def flaky(inp: Order, ctx: StepContext) -> StepResponse[dict[str, Any]]:
    FLAKY.setdefault(inp.id, 0)
    FLAKY[inp.id] += 1
    JOURNAL.append(("attempt", (ctx.attempt, ctx.idempotency_key, time.monotonic())))
    if FLAKY[inp.id] <= 2:
        raise ConnectionError(f"flaky attempt {ctx.attempt}")
    return StepResponse({"attempts": ctx.attempt})


@create_workflow("ex-retry")
def ex_retry(inp: Order) -> WorkflowResponse:
    return WorkflowResponse(flaky(inp))


async def test_retries_with_backoff_then_succeed_with_one_idempotency_key(hub: Hub) -> None:
    run = await ex_retry(hub).run(input={"id": "r1"})
    assert run.status == "succeeded" and run.result == {"attempts": 3}
    attempts = [a for kind, a in JOURNAL if kind == "attempt"]
    assert [a[0] for a in attempts] == [1, 2, 3]
    assert len({a[1] for a in attempts}) == 1, "idempotency key must not depend on the attempt"
    gap1 = attempts[1][2] - attempts[0][2]
    gap2 = attempts[2][2] - attempts[1][2]
    assert gap1 >= 0.045 and gap2 >= 0.095, (gap1, gap2)
    assert run.steps["ex-flaky"].attempts == 3


@create_step("ex-always-fails", max_retries=2, retry_interval=0.01)
async def always_fails(inp: Any, ctx: StepContext) -> None:
    raise RuntimeError(f"boom on attempt {ctx.attempt}")


@create_workflow("ex-exhausted")
def ex_exhausted(inp: Order) -> WorkflowResponse:
    create_step("ex-before", record("ex-before"), undo("ex-before"))(inp)
    return WorkflowResponse(always_fails(inp))


async def test_final_error_after_retries_is_reported_not_swallowed(hub: Hub) -> None:
    with pytest.raises(WorkflowFailed) as info:
        await ex_exhausted(hub).run(input={"id": "x"})
    run = info.value.run
    assert run.status == "compensated"
    assert run.error is not None
    assert run.error["step"] == "ex-always-fails"
    assert run.error["message"] == "boom on attempt 3"
    assert run.steps["ex-always-fails"].attempts == 3
    assert run.steps["ex-always-fails"].state == "permanent_failure"
    assert ("compensate", {"undo": "ex-before"}) in JOURNAL
    assert "boom on attempt 3" in str(info.value)


# -- permanent failure, skip ------------------------------------------------------------
@create_workflow("ex-permanent")
def ex_permanent(inp: Order) -> WorkflowResponse:
    a = create_step("ex-p-a", record("a"), undo("a"))(inp)
    create_step("ex-p-b", record("b"), undo("b"))(a)
    create_step("ex-p-c", lambda i, c: StepResponse.permanent_failure("card declined"))(inp)
    return WorkflowResponse(a)


async def test_permanent_failure_compensates_in_reverse_order_once(hub: Hub) -> None:
    run = await ex_permanent(hub).run(input={"id": "p"}, raise_on_error=False)
    assert run.status == RunStatus.COMPENSATED
    assert run.error and run.error["message"] == "card declined"
    assert [e for e in JOURNAL if e[0] == "compensate"] == [
        ("compensate", {"undo": "b"}), ("compensate", {"undo": "a"})]
    assert run.steps["ex-p-a"].state == "reverted"
    assert run.steps["ex-p-c"].state == "permanent_failure"
    assert run.state == "reverted"


@create_workflow("ex-skip")
def ex_skip(inp: Order) -> WorkflowResponse:
    s = create_step("ex-skip-me", lambda i, c: StepResponse.skip())(inp)
    t = create_step("ex-after-skip", lambda i, c: {"saw": i})(s)
    return WorkflowResponse({"skipped": s, "after": t})


async def test_skipped_step_yields_none_and_the_flow_goes_on(hub: Hub) -> None:
    run = await ex_skip(hub).run(input={"id": "s"})
    assert run.status == "succeeded"
    assert run.result == {"skipped": None, "after": {"saw": None}}
    assert run.steps["ex-skip-me"].state == "skipped"


# -- timeouts --------------------------------------------------------------------------
async def _slow(inp: Any, ctx: StepContext) -> str:
    await asyncio.sleep(5)
    return "late"


@create_workflow("ex-timeout")
def ex_timeout(inp: Order) -> WorkflowResponse:
    create_step("ex-t-a", record("ta"), undo("ta"))(inp)
    return WorkflowResponse(create_step("ex-t-slow", _slow, timeout=0.2)(inp))


async def test_timeout_fails_the_step_and_compensates(hub: Hub) -> None:
    run = await ex_timeout(hub).run(input={"id": "t"}, raise_on_error=False)
    assert run.status == "compensated"
    assert run.steps["ex-t-slow"].state == "timeout"
    assert run.error and "timed out after 0.2s" in run.error["message"]
    assert ("compensate", {"undo": "ta"}) in JOURNAL


@create_workflow("ex-timeout-continue")
def ex_timeout_continue(inp: Order) -> WorkflowResponse:
    slow = create_step("ex-tc-slow", _slow, timeout=0.2, continue_on_permanent_failure=True)
    out = slow(inp)
    after = create_step("ex-tc-after", lambda i, c: "ran")(out)
    return WorkflowResponse({"slow": out, "after": after})


async def test_continue_on_permanent_failure_applies_to_timeouts(hub: Hub) -> None:
    # medusajs/medusa#14719: the option was ignored when the failure was a timeout
    run = await ex_timeout_continue(hub).run(input={"id": "tc"})
    assert run.status == "succeeded"
    assert run.result == {"slow": None, "after": "ran"}
    assert run.steps["ex-tc-slow"].state == "timeout"


@create_workflow("ex-skip-on-failure")
def ex_skip_on_failure(inp: Order) -> WorkflowResponse:
    bad = create_step("ex-sof-bad", lambda i, c: StepResponse.permanent_failure("nope"),
                      skip_on_permanent_failure="ex-sof-target")(inp)
    middle = create_step("ex-sof-middle", record("middle"))(bad)
    target = create_step("ex-sof-target", record("target"))(middle)
    return WorkflowResponse({"target": target})


async def test_skip_on_permanent_failure_jumps_to_the_named_step(hub: Hub) -> None:
    run = await ex_skip_on_failure(hub).run(input={"id": "sof"})
    assert run.status == "succeeded"
    assert run.steps["ex-sof-middle"].state == "skipped"
    assert run.steps["ex-sof-target"].state == "done"
    assert ("invoke", "middle") not in JOURNAL and ("invoke", "target") in JOURNAL


@create_workflow("ex-skip-rest")
def ex_skip_rest(inp: Order) -> WorkflowResponse:
    create_step("ex-sr-a", record("sr-a"), undo("sr-a"))(inp)
    create_step("ex-sr-bad", lambda i, c: StepResponse.permanent_failure("no"),
                skip_on_permanent_failure=True)(inp)
    create_step("ex-sr-rest", record("sr-rest"))(inp)
    return WorkflowResponse("finished")


async def test_skip_on_permanent_failure_true_skips_the_rest(hub: Hub) -> None:
    run = await ex_skip_rest(hub).run(input={"id": "sr"})
    assert run.status == "succeeded" and run.result == "finished"
    assert run.steps["ex-sr-rest"].state == "skipped"
    assert not [e for e in JOURNAL if e[0] == "compensate"]


# -- compensation options ---------------------------------------------------------------
@create_workflow("ex-no-comp")
def ex_no_comp(inp: Order) -> WorkflowResponse:
    create_step("ex-nc-a", record("nc-a"), undo("nc-a"), no_compensation=True)(inp)
    create_step("ex-nc-b", record("nc-b"), undo("nc-b"))(inp)
    create_step("ex-nc-fail", record("nc-fail", fail="permanent"))(inp)
    return WorkflowResponse(None)


async def test_no_compensation_steps_are_left_alone(hub: Hub) -> None:
    run = await ex_no_comp(hub).run(input={"id": "nc"}, raise_on_error=False)
    assert run.status == "compensated"
    assert [e for e in JOURNAL if e[0] == "compensate"] == [("compensate", {"undo": "nc-b"})]
    assert run.steps["ex-nc-a"].state == "done"


COMP_FAILS: dict[str, int] = {}


async def _failing_compensation(inp: Any, ctx: StepContext) -> None:
    COMP_FAILS[ctx.execution_id] = COMP_FAILS.get(ctx.execution_id, 0) + 1
    raise RuntimeError("ERP is down")


@create_workflow("ex-comp-fails")
def ex_comp_fails(inp: Order) -> WorkflowResponse:
    create_step("ex-cf-a", record("cf-a"), undo("cf-a"))(inp)
    create_step("ex-cf-b", record("cf-b"), _failing_compensation, max_retries=2,
                retry_interval=0.01)(inp)
    create_step("ex-cf-fail", record("cf-fail", fail="permanent"))(inp)
    return WorkflowResponse(None)


async def test_compensation_that_keeps_failing_parks_in_compensation_failed(hub: Hub) -> None:
    run = await ex_comp_fails(hub).run(input={"id": "cf"}, raise_on_error=False)
    assert run.status == RunStatus.COMPENSATION_FAILED
    assert COMP_FAILS[run.id] == 3
    assert run.steps["ex-cf-b"].state == "failed"
    assert run.steps["ex-cf-b"].compensation_error is not None
    assert run.error and run.error["compensation_error"]["message"] == "ERP is down"
    stored = await hub.get_run(run.id)
    assert stored.status == "compensation_failed" and stored.state == "failed"
    # cf-a comes before the failed compensation: not compensated yet, still visible as done
    assert stored.steps["ex-cf-a"].state == "done"


# -- parallel, nested, when, transform --------------------------------------------------
@create_workflow("ex-parallel")
def ex_parallel(inp: Order) -> WorkflowResponse:
    a, b = parallelize(
        create_step("ex-par-a", record("par-a"), undo("par-a"))(inp),
        create_step("ex-par-b", record("par-b"), undo("par-b"))(inp),
    )
    create_step("ex-par-fail", record("par-fail", fail="permanent"))({"a": a, "b": b})
    return WorkflowResponse(None)


async def test_parallel_steps_keep_their_compensation_input(hub: Hub) -> None:
    # medusajs/medusa#9844: a step inside parallelize lost its compensation input
    run = await ex_parallel(hub).run(input={"id": "par"}, raise_on_error=False)
    assert run.status == "compensated"
    comps = sorted(str(e[1]) for e in JOURNAL if e[0] == "compensate")
    assert comps == [str({"undo": "par-a"}), str({"undo": "par-b"})]


STARTED: dict[str, asyncio.Event] = {}


async def _overlap(inp: Any, ctx: StepContext) -> str:
    """Each step waits for the other to have started: run one after the other, neither
    could finish (a condition, not a stopwatch, so a busy machine cannot fail it)."""
    STARTED.setdefault(ctx.step, asyncio.Event()).set()
    other = "ex-con-b" if ctx.step == "ex-con-a" else "ex-con-a"
    await asyncio.wait_for(STARTED.setdefault(other, asyncio.Event()).wait(), 30)
    return "overlapped"


@create_workflow("ex-concurrent")
def ex_concurrent(inp: Order) -> WorkflowResponse:
    a, b = parallelize(create_step("ex-con-a", _overlap)(inp),
                       create_step("ex-con-b", _overlap)(inp))
    return WorkflowResponse({"a": a, "b": b})


async def test_parallel_steps_run_concurrently(hub: Hub) -> None:
    STARTED.clear()
    run = await ex_concurrent(hub).run(input={"id": "con"})
    assert run.result == {"a": "overlapped", "b": "overlapped"}


@create_workflow("ex-child")
def ex_child(inp: Order) -> WorkflowResponse:
    r = create_step("ex-child-reserve", record("child-reserve"), undo("child-reserve"))(inp)
    return WorkflowResponse({"reserved": r, "id": inp.id})


@create_workflow("ex-parent")
def ex_parent(inp: Order) -> WorkflowResponse:
    create_step("ex-parent-first", record("parent-first"), undo("parent-first"))(inp)
    child = ex_child(inp)
    fail = when(inp, lambda v: v["amount"] < 0).then(
        lambda: create_step("ex-parent-fail", record("pf", fail="permanent"))(child))
    return WorkflowResponse({"child": child, "fail": fail})


async def test_nested_workflow_is_part_of_the_parent_and_compensated_with_it(hub: Hub) -> None:
    ok = await ex_parent(hub).run(input={"id": "n1", "amount": 5})
    assert ok.result == {"child": {"reserved": {"step": "child-reserve"}, "id": "n1"},
                         "fail": None}
    assert ok.steps["ex-parent-fail"].state == "skipped"
    assert "ex-child.ex-child-reserve" in ok.steps
    JOURNAL.clear()
    bad = await ex_parent(hub).run(input={"id": "n2", "amount": -1}, raise_on_error=False)
    assert bad.status == "compensated"
    assert [e for e in JOURNAL if e[0] == "compensate"] == [
        ("compensate", {"undo": "child-reserve"}), ("compensate", {"undo": "parent-first"})]


@create_workflow("ex-transform")
def ex_transform(inp: Order) -> WorkflowResponse:
    doubled = transform(inp, lambda v: {"amount": v["amount"] * 2, "id": v["id"]})
    out = create_step("ex-tr-echo", lambda i, c: i)(doubled)
    return WorkflowResponse(transform({"o": out}, lambda v: v["o"]["amount"]))


async def test_transform_shapes_values_at_run_time(hub: Hub) -> None:
    run = await ex_transform(hub).run(input={"id": "tr", "amount": 21})
    assert run.result == 42


# -- idempotent starts and reading runs -------------------------------------------------
@create_workflow("ex-once")
def ex_once(inp: Order) -> WorkflowResponse:
    return WorkflowResponse(create_step("ex-once-step", record("once"))(inp))


async def test_same_transaction_id_returns_the_first_execution(hub: Hub) -> None:
    first = await ex_once(hub).run(input={"id": "o"}, transaction_id="order.placed:o")
    second = await ex_once(hub).run(input={"id": "o"}, transaction_id="order.placed:o")
    assert first.id == second.id and second.result == first.result
    assert JOURNAL.count(("invoke", "once")) == 1


async def test_concurrent_starts_of_one_transaction_create_one_execution(hub: Hub) -> None:
    runs = await asyncio.gather(*[
        ex_once(hub).run(input={"id": "c"}, transaction_id="tx-conc") for _ in range(10)])
    assert len({r.id for r in runs}) == 1
    assert JOURNAL.count(("invoke", "once")) == 1


@create_workflow("ex-rerunnable", idempotent=False)
def ex_rerunnable(inp: Order) -> WorkflowResponse:
    return WorkflowResponse(create_step("ex-rerun-step", record("rerun"))(inp))


async def test_non_idempotent_workflow_runs_a_finished_transaction_again(hub: Hub) -> None:
    a = await ex_rerunnable(hub).run(input={"id": "r"}, transaction_id="tx-r")
    b = await ex_rerunnable(hub).run(input={"id": "r"}, transaction_id="tx-r")
    assert a.id != b.id
    assert JOURNAL.count(("invoke", "rerun")) == 2
    assert (await hub.get_run("tx-r")).id == b.id


async def test_wait_false_returns_pending_and_the_run_can_be_read_later(hub: Hub) -> None:
    run = await ex_once(hub).run(input={"id": "w"}, transaction_id="tx-w", wait=False)
    assert run.status == "pending"
    done = await hub.wait("tx-w", timeout=10)
    assert done.status == "succeeded"
    assert (await hub.get_run(run.id)).result == {"step": "once"}


# -- bad input --------------------------------------------------------------------------
async def test_invalid_input_raises_at_once_and_stores_nothing(hub: Hub) -> None:
    with pytest.raises(InputValidationError, match=r"input of workflow 'ex-once'.*\(id\)"):
        await ex_once(hub).run(input={"amount": 3}, transaction_id="tx-bad")
    with pytest.raises(ExecutionNotFound):
        await hub.get_run("tx-bad")


async def test_unknown_workflow_names_the_known_ones(hub: Hub) -> None:
    with pytest.raises(UnknownWorkflow, match="no workflow named 'nope'.*ex-once"):
        await hub.start("nope", {})


@create_workflow("ex-unserializable")
def ex_unserializable(inp: Order) -> WorkflowResponse:
    return WorkflowResponse(create_step("ex-unser", lambda i, c: StepResponse(object()))(inp))


async def test_unserializable_output_fails_the_step_naming_it(hub: Hub) -> None:
    run = await ex_unserializable(hub).run(input={"id": "u"}, raise_on_error=False)
    assert run.status == "compensated"
    assert run.error and "output of step 'ex-unser' cannot be stored as JSON" in run.error[
        "message"]


@create_workflow("ex-too-big")
def ex_too_big(inp: Order) -> WorkflowResponse:
    return WorkflowResponse(create_step("ex-big", lambda i, c: "x" * 2_000_000)(inp))


async def test_oversized_output_fails_the_step_naming_step_and_size(hub: Hub) -> None:
    run = await ex_too_big(hub).run(input={"id": "b"}, raise_on_error=False)
    assert run.error is not None
    assert "output of step 'ex-big' is 2000002 bytes, over the limit" in run.error["message"]
    with pytest.raises(PayloadTooLarge, match="input of workflow 'ex-once' is"):
        await ex_once(hub).run(input={"id": "y" * 2_000_000})
