"""``create_workflow``: run a composer once and register the graph it describes."""

from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from hub.engine.graph import INPUT, Expr, Graph, Ref, StepNode, TransformNode
from hub.engine.registry import REGISTRY, WorkflowSpec
from hub.engine.response import WorkflowResponse
from hub.errors import DefinitionError
from hub.sdk import compose
from hub.sdk.symbols import Symbol, input_symbol

if TYPE_CHECKING:
    from hub.engine.hub import Hub
    from hub.engine.run import Run


def _input_model(composer: Callable[..., Any]) -> type[BaseModel] | None:
    params = list(inspect.signature(composer).parameters.values())
    if len(params) > 1:
        raise DefinitionError(
            f"composer {composer.__qualname__}: takes one argument (the workflow input), "
            f"got {len(params)}"
        )
    if not params:
        return None
    try:
        ann = typing.get_type_hints(composer).get(params[0].name)
    except Exception:
        ann = None
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann
    return None


def _navigate(expr: Expr, path: tuple[str | int, ...]) -> Expr:
    """Follow ``path`` into an expression statically, as far as constants allow."""
    for i, key in enumerate(path):
        if isinstance(expr, Ref):
            return Ref(expr.source, (*expr.path, *path[i:]))
        if isinstance(expr, dict) and isinstance(key, str):
            expr = expr.get(key)
        elif isinstance(expr, list) and isinstance(key, int) and -len(expr) <= key < len(expr):
            expr = expr[key]
        else:
            return None
    return expr


class _Hooks:
    """``wf.hooks.<name>(handler, compensate=None)`` registers the handler of a hook."""

    def __init__(self, spec: WorkflowSpec) -> None:
        self._spec = spec

    def __getattr__(self, name: str) -> Callable[..., None]:
        spec = self._spec
        if name not in spec.hook_names:
            raise DefinitionError(
                f"workflow {spec.name!r} has no hook {name!r} "
                f"(hooks: {', '.join(spec.hook_names) or 'none'})"
            )

        def register(
            handler: Callable[..., Any], compensate: Callable[..., Any] | None = None
        ) -> None:
            if name in spec.hooks:
                raise DefinitionError(
                    f"workflow {spec.name!r}: hook {name!r} already has a handler; a hook "
                    "takes one"
                )
            spec.hooks[name] = (handler, compensate)

        return register


class WorkflowDefinition:
    """A registered workflow. ``wf(hub).run(...)`` runs it; ``wf(input)`` inside another
    composer nests it (its steps and compensations become part of the parent)."""

    def __init__(self, spec: WorkflowSpec) -> None:
        self.spec = spec
        self.hooks = _Hooks(spec)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def graph(self) -> Graph:
        return self.spec.graph

    @property
    def version(self) -> str:
        return self.spec.version

    def __call__(self, arg: Any = None) -> Any:
        comp = compose.active()
        if comp is not None:
            return self.as_step(arg)
        from hub.engine.hub import Hub

        if not isinstance(arg, Hub):
            raise DefinitionError(
                f"workflow {self.name!r}: call it with the hub, as in "
                f"`await {self.name.replace('-', '_')}(hub).run(input=...)`; inside another "
                "composer, call it with its input to nest it"
            )
        return WorkflowRunner(self, arg)

    def as_step(self, input: Any = None, *, name: str | None = None) -> Symbol:
        """Nest this workflow in the composer being run, under the prefix ``name``."""
        comp = compose.current(f"workflow {self.name!r} as a step")
        prefix = name or self.name
        child = self.spec.graph
        parent_input = comp.expr(input, f"input of nested workflow {prefix!r}")

        def rename(node_id: str) -> str:
            return f"{prefix}.{node_id}"

        def sub(expr: Expr) -> Expr:
            if isinstance(expr, Ref):
                if expr.source == INPUT:
                    return _navigate(parent_input, expr.path)
                return Ref(rename(expr.source), expr.path)
            if isinstance(expr, dict):
                return {k: sub(v) for k, v in expr.items()}
            if isinstance(expr, list):
                return [sub(v) for v in expr]
            return expr

        nodes: dict[str, StepNode] = {}
        for node in child.steps.values():
            nodes[rename(node.id)] = dataclasses.replace(
                node,
                id=rename(node.id),
                input=sub(node.input),
                after=tuple(rename(a) for a in node.after) if node.after else comp.frontier,
                when=(*comp.when_stack, *(rename(w) for w in node.when)),
            )
        for t in child.transforms.values():
            comp.check_id(rename(t.id), "nest the workflow under another name=")
            comp.transforms[rename(t.id)] = TransformNode(rename(t.id), sub(t.input), t.fn)
        for c in child.conditions.values():
            comp.check_id(rename(c.id), "nest the workflow under another name=")
            comp.conditions[rename(c.id)] = dataclasses.replace(
                c, id=rename(c.id), input=sub(c.input)
            )
        waited_on = {a for n in child.steps.values() for a in n.after}
        exits = tuple(rename(s) for s in child.steps if s not in waited_on)
        result_id = f"{prefix}.$result"
        comp.check_id(result_id, "nest the workflow under another name=")
        comp.transforms[result_id] = TransformNode(result_id, sub(child.result), None)
        comp.add_block(nodes, exits, result_id)
        return comp.symbol(Ref(result_id))

    def __repr__(self) -> str:
        return f"<workflow {self.name!r} version {self.version}>"


class WorkflowRunner:
    """A workflow bound to a hub, as Medusa's ``workflow(container)``."""

    def __init__(self, definition: WorkflowDefinition, hub: Hub) -> None:
        self.definition = definition
        self.hub = hub

    async def run(
        self,
        *,
        input: Any = None,
        transaction_id: str | None = None,
        wait: bool = True,
        raise_on_error: bool = True,
        trigger: dict[str, Any] | None = None,
        timeout: float | None = None,
        once: bool = False,
    ) -> Run:
        """Start (or find, for a known ``transaction_id``) an execution; see ``Hub.start``."""
        return await self.hub.start(
            self.definition.name,
            input,
            transaction_id=transaction_id,
            wait=wait,
            raise_on_error=raise_on_error,
            trigger=trigger,
            timeout=timeout,
            once=once,
        )


def _build(
    name: str,
    composer: Callable[..., Any],
    *,
    store: bool,
    retention_time: timedelta | float | None,
    idempotent: bool,
) -> WorkflowDefinition:
    if not name or not isinstance(name, str) or "/" in name or "." in name:
        raise DefinitionError(
            f"a workflow needs a non-empty name without '/' or '.', got {name!r}"
        )
    if inspect.iscoroutinefunction(composer):
        raise DefinitionError(
            f"workflow {name!r}: the composer must be a plain function (it only wires steps, "
            "it never awaits)"
        )
    model = _input_model(composer)
    comp = compose.Composition(workflow=name)
    with compose.composing(comp):
        params = inspect.signature(composer).parameters
        returned = composer(input_symbol(name, model)) if params else composer()
    result = returned.result if isinstance(returned, WorkflowResponse) else returned
    result_expr = comp.expr(result, "the workflow's result")
    comp._check_refs(result_expr, "the workflow's result")
    graph = Graph.build(name, comp.steps, comp.transforms, comp.conditions, result_expr)
    if isinstance(retention_time, int | float):
        retention_time = timedelta(seconds=retention_time)
    spec = WorkflowSpec(
        name=name,
        graph=graph,
        input_model=model,
        store=store,
        retention_time=retention_time,
        idempotent=idempotent,
        module=getattr(composer, "__module__", ""),
        hooks=comp.hook_table,
        hook_names=tuple(comp.hooks),
    )
    REGISTRY.add(spec)
    return WorkflowDefinition(spec)


def create_workflow(
    name: str,
    composer: Callable[..., Any] | None = None,
    *,
    store: bool = True,
    retention_time: timedelta | float | None = None,
    idempotent: bool = True,
) -> Any:
    """Define a workflow: ``create_workflow(name, composer)`` or ``@create_workflow(name)``.

    The composer runs now, once, on symbolic values; the graph it wires is registered under
    ``name`` with a version hash. Options: ``store=False`` deletes a succeeded execution once
    its result is read (failures are always kept); ``retention_time`` is how long a finished
    execution is kept before purge; ``idempotent=False`` lets a finished transaction id start
    a new execution (the default returns the stored one).
    """

    def decorate(fn: Callable[..., Any]) -> WorkflowDefinition:
        return _build(
            name, fn, store=store, retention_time=retention_time, idempotent=idempotent
        )

    if composer is None:
        return decorate
    return decorate(composer)
