"""``map_each``: run a step (or a workflow) once per item of a list known only at run time.

The fan-out is one node of the graph (so the graph keeps its hash and still draws); its
items live in rows of their own while it runs, so the cost of an item's transition does
not grow with the list.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hub.engine.children import runs_child, undoes_child
from hub.engine.graph import FanoutSpec, StepNode, StepOptions
from hub.errors import DefinitionError
from hub.sdk import compose
from hub.sdk.step import StepDefinition
from hub.sdk.symbols import Symbol


async def _runs_in_executor(_value: Any, _ctx: Any) -> None:
    """Never called: the executor runs a map's items itself (hub.engine.fanout)."""
    raise RuntimeError("a map step is run by the fan-out runner")


def map_each(
    items: Symbol,
    step: Any,
    *,
    max_concurrency: int = 10,
    key: Callable[[Any], Any] | None = None,
    max_items: int | None = None,
    name: str | None = None,
) -> Symbol:
    """Run ``step`` (a step, or a workflow run as a child per item) once per item of
    ``items`` (the input or a step's output, a list at run time); the result is the list of
    the items' results, in item order.

    ``key(item)`` names each item in its idempotency key (default: its index), so a retry
    or a recovered run makes each item's effect once: pass a stable business key (a SKU)
    when the list may be reordered. At most ``max_concurrency`` items run at once. A list
    longer than ``max_items`` (default ``HUB_MAX_FANOUT_ITEMS``) fails the step before any
    item starts. The item step's options apply per item: retries, and
    ``continue_on_permanent_failure`` / ``skip_on_permanent_failure`` (the item's result
    is then None and the others go on); any other item failure fails the map, and the
    items that completed are compensated, latest first, with the workflow's other steps.
    """
    from hub.sdk.workflow import WorkflowDefinition

    comp = compose.current("map_each(...)")
    if not isinstance(items, Symbol):
        raise DefinitionError(
            f"workflow {comp.workflow!r}: map_each(...) maps over a run-time list (the input "
            f"or a step's output), got {type(items).__name__}; a list known now needs no map")
    if isinstance(max_concurrency, bool) or not isinstance(max_concurrency, int) \
            or max_concurrency < 1:
        raise DefinitionError(
            f"workflow {comp.workflow!r}: map_each(max_concurrency=...) must be an int >= 1, "
            f"got {max_concurrency!r}")
    if max_items is not None and (isinstance(max_items, bool) or not isinstance(max_items, int)
                                  or max_items < 1):
        raise DefinitionError(
            f"workflow {comp.workflow!r}: map_each(max_items=...) must be an int >= 1, "
            f"got {max_items!r}")
    if key is not None and not callable(key):
        raise DefinitionError(f"workflow {comp.workflow!r}: map_each(key=...) must be a "
                              f"function of an item, got {key!r}")
    if isinstance(step, StepDefinition):
        item = StepNode(id=step.name, step_name=step.name, input=None, after=(), when=(),
                        options=step.options, invoke=step._invoke,
                        compensate=step._compensate, kind=step.kind,
                        input_model=step._model)
    elif isinstance(step, WorkflowDefinition):
        item = StepNode(id=step.name, step_name=step.name, input=None, after=(), when=(),
                        options=StepOptions(), invoke=runs_child(step.name),
                        compensate=undoes_child(step.name), kind="child", child=step.name)
    else:
        raise DefinitionError(
            f"workflow {comp.workflow!r}: map_each(...) runs a step (create_step) or a "
            f"workflow (create_workflow) per item, got {step!r}")
    if item.kind == "hook" or item.options.is_async:
        raise DefinitionError(
            f"workflow {comp.workflow!r}: map_each(...) cannot run {item.step_name!r} per "
            "item: hooks and async steps wait on the outside one at a time")
    node_id = name or f"each-{item.step_name}"
    compensable = item.compensate is not None and not item.options.no_compensation
    node = StepNode(
        id=node_id, step_name=item.step_name, input=comp.expr(items, f"items of {node_id!r}"),
        after=(), when=(), options=StepOptions(no_compensation=not compensable),
        invoke=_runs_in_executor, compensate=_runs_in_executor if compensable else None,
        kind="map", fanout=FanoutSpec(item, max_concurrency, max_items, key))
    return comp.add_step(node)
