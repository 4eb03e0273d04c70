"""``run_child``: start another workflow as a child execution, and use its result."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hub.engine.children import starts_child, undoes_child
from hub.engine.graph import StepNode, StepOptions
from hub.errors import DefinitionError
from hub.sdk import compose
from hub.sdk.symbols import Symbol

if TYPE_CHECKING:
    from hub.sdk.workflow import WorkflowDefinition


def child_node(workflow: WorkflowDefinition, node_id: str, input: Any,
               options: StepOptions, comp: compose.Composition) -> StepNode:
    """The step that starts ``workflow`` as a child and is undone by undoing it."""
    from hub.sdk.workflow import WorkflowDefinition

    if not isinstance(workflow, WorkflowDefinition):
        raise DefinitionError(
            f"workflow {comp.workflow!r}: run_child(...) takes a workflow made with "
            f"create_workflow, got {workflow!r}")
    return StepNode(
        id=node_id, step_name=node_id, input=comp.expr(input, f"input of child {node_id!r}"),
        after=(), when=(), options=options, invoke=starts_child(workflow.name),
        compensate=undoes_child(workflow.name), kind="child", child=workflow.name)


def run_child(workflow: WorkflowDefinition, input: Any = None, *, name: str | None = None,
              timeout: float | None = None) -> Symbol:
    """Run ``workflow`` as a child execution of its own (own id, lineage, console page)
    instead of inlining its steps; the result is the child's result.

    The parent waits for the child's end without holding a lease; a child that fails fails
    this step; undoing this step (a rollback, a cancel) cancels or compensates the child.
    ``timeout``: seconds the parent waits before the step fails with a timeout.
    """
    comp = compose.current("run_child(...)")
    node_id = name or f"child-{getattr(workflow, 'name', 'workflow')}"
    options = StepOptions(is_async=True, timeout=timeout)
    return comp.add_step(child_node(workflow, node_id, input, options, comp))
