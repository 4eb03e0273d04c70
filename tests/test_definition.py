"""Definition time: the composer runs once and leaves a static graph, or a clear error."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from hub import (
    DefinitionError,
    StepResponse,
    WorkflowResponse,
    create_step,
    create_workflow,
    parallelize,
    transform,
    when,
)


class Amount(BaseModel):
    amount: int
    currency: str = "EUR"


noop = create_step("def-noop", lambda inp, ctx: StepResponse(inp))


def test_composer_runs_once_and_builds_a_static_graph() -> None:
    calls = []

    def composer(inp: Amount) -> WorkflowResponse:
        calls.append(1)
        a = noop(inp)
        b = noop.config(name="def-noop-2")(a)
        return WorkflowResponse(b)

    wf = create_workflow("def-static", composer)
    assert calls == [1]
    graph = wf.graph.to_dict()
    assert [s["id"] for s in graph["steps"]] == ["def-noop", "def-noop-2"]
    assert graph["steps"][1]["after"] == ["def-noop"]
    assert graph["steps"][1]["reads"] == ["def-noop"]
    assert len(wf.version) == 16


def test_same_composer_gives_the_same_version() -> None:
    def composer(inp: Amount) -> WorkflowResponse:
        return WorkflowResponse(noop(inp))

    v1 = create_workflow("def-version-a", composer).version
    v2 = create_workflow("def-version-b", composer).version
    assert v1 != v2  # the name is part of the graph
    assert create_workflow("def-version-a", composer).version == v1


@pytest.mark.parametrize(
    "body",
    [
        lambda inp: noop(inp) if inp.amount > 0 else None,
        lambda inp: noop(inp) if inp.amount else None,
        lambda inp: noop(f"{inp.currency}"),
        lambda inp: noop(inp.amount + 1),
        lambda inp: noop(len(inp.currency)),
        lambda inp: noop(inp.amount == 3),
    ],
    ids=["compare", "truth", "format", "arithmetic", "len", "equality"],
)
def test_symbolic_value_used_as_plain_value_is_a_definition_error(body: object) -> None:
    def composer(inp: Amount) -> None:
        body(inp)  # type: ignore[operator]

    with pytest.raises(DefinitionError) as info:
        create_workflow("def-misuse", composer)
    message = str(info.value)
    assert "def-misuse" in message
    assert "transform(" in message and "when(" in message


def test_unknown_input_field_is_a_definition_error() -> None:
    def composer(inp: Amount) -> None:
        noop(inp.amout)

    with pytest.raises(DefinitionError, match="has no field 'amout'.*amount, currency"):
        create_workflow("def-field", composer)


def test_step_called_outside_a_composer_says_so() -> None:
    with pytest.raises(DefinitionError, match="outside a workflow composer"):
        noop({"x": 1})


def test_same_step_twice_needs_config_name() -> None:
    def composer(inp: Amount) -> None:
        noop(inp)
        noop(inp)

    with pytest.raises(DefinitionError, match=r"config\(name=\.\.\.\)"):
        create_workflow("def-dup", composer)


def test_parallelize_hangs_steps_side_by_side() -> None:
    a = create_step("def-par-a", lambda i, c: 1)
    b = create_step("def-par-b", lambda i, c: 2)
    c = create_step("def-par-c", lambda i, c: 3)

    def composer(inp: Amount) -> WorkflowResponse:
        first = noop(inp)
        x, y = parallelize(a(first), b(first))
        return WorkflowResponse(c({"x": x, "y": y}))

    g = create_workflow("def-par", composer).graph
    assert g.steps["def-par-a"].after == ("def-noop",)
    assert g.steps["def-par-b"].after == ("def-noop",)
    assert set(g.steps["def-par-c"].after) == {"def-par-a", "def-par-b"}


def test_parallelize_refuses_a_data_dependency_inside_the_group() -> None:
    a = create_step("def-pardep-a", lambda i, c: 1)
    b = create_step("def-pardep-b", lambda i, c: 2)

    def composer(inp: Amount) -> None:
        x = a(inp)
        parallelize(x, b(x))

    with pytest.raises(DefinitionError, match="cannot run side by side"):
        create_workflow("def-pardep", composer)


def test_condition_ids_are_deterministic_from_the_graph() -> None:
    def composer(inp: Amount) -> None:
        when(inp, lambda v: v["amount"] > 0).then(lambda: noop(inp))
        when(inp, lambda v: v["amount"] < 0, name="refund").then(
            lambda: noop.config(name="def-noop-neg")(inp))
        transform(inp, lambda v: v)

    g = create_workflow("def-when", composer).graph
    assert list(g.conditions) == ["when-1", "refund"]
    assert g.steps["def-noop"].when == ("when-1",)
    assert g.steps["def-noop-neg"].when == ("refund",)
    assert list(g.transforms) == ["transform-1"]


def test_bad_step_options_are_definition_errors() -> None:
    with pytest.raises(DefinitionError, match="unexpected keyword"):
        create_step("def-bad", lambda i, c: 1, retries=3)
    with pytest.raises(DefinitionError, match="timeout must be > 0"):
        create_step("def-bad", lambda i, c: 1, timeout=0)
    with pytest.raises(DefinitionError, match="plain function"):
        async def composer(inp: Amount) -> None:
            return None
        create_workflow("def-async", composer)


def test_workflow_called_without_hub_explains_how() -> None:
    wf = create_workflow("def-call", lambda inp: WorkflowResponse(noop(inp)))
    with pytest.raises(DefinitionError, match=r"run\(input=\.\.\.\)"):
        wf({"amount": 1})
