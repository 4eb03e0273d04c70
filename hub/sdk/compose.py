"""The composition context and the helpers that shape a graph: transform, when, parallelize.

Medusa's composer records steps instead of running them; so does this one. Each step call
appends a block after the current frontier; ``parallelize`` re-hangs the last blocks side by
side; ``when`` tags the steps composed in its ``then`` with a condition.
"""

from __future__ import annotations

import contextvars
import dataclasses
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from hub.engine.graph import ConditionNode, Expr, Ref, StepNode, TransformNode, iter_refs
from hub.errors import DefinitionError
from hub.sdk.symbols import Symbol, to_expr


@dataclass
class Block:
    """The nodes one call added: a step, or a whole nested workflow."""

    nodes: list[str]
    before: tuple[str, ...]
    after: tuple[str, ...]
    key: str


@dataclass
class Composition:
    """Mutable state of one composer run; frozen into a Graph at the end."""

    workflow: str
    steps: dict[str, StepNode] = field(default_factory=dict)
    transforms: dict[str, TransformNode] = field(default_factory=dict)
    conditions: dict[str, ConditionNode] = field(default_factory=dict)
    frontier: tuple[str, ...] = ()
    blocks: list[Block] = field(default_factory=list)
    when_stack: list[str] = field(default_factory=list)
    hook_table: dict[str, tuple[Callable[..., Any], Callable[..., Any] | None]] = field(
        default_factory=dict
    )
    hooks: list[str] = field(default_factory=list)

    def symbol(self, ref: Ref) -> Symbol:
        return Symbol(ref, self.workflow)

    def expr(self, value: Any, where: str) -> Expr:
        return to_expr(value, self.workflow, where)

    def check_id(self, node_id: str, hint: str) -> None:
        if node_id in self.steps or node_id in self.transforms or node_id in self.conditions:
            raise DefinitionError(
                f"workflow {self.workflow!r}: a node named {node_id!r} already exists; {hint}"
            )

    def add_step(self, node: StepNode) -> Symbol:
        self.check_id(
            node.id, f"reuse a step under another id with {node.step_name}.config(name=...)"
        )
        self._check_refs(node.input, f"step {node.id!r}")
        node = dataclasses.replace(node, after=self.frontier, when=tuple(self.when_stack))
        self.steps[node.id] = node
        self.blocks.append(Block([node.id], self.frontier, (node.id,), node.id))
        self.frontier = (node.id,)
        return self.symbol(Ref(node.id))

    def add_block(self, nodes: dict[str, StepNode], exits: tuple[str, ...], key: str) -> None:
        """Append an already-wired group (a nested workflow's steps)."""
        for node_id, node in nodes.items():
            self.check_id(
                node_id, "nest the workflow under another name with wf.as_step(input, name=...)"
            )
            self.steps[node_id] = node
        self.blocks.append(Block(list(nodes), self.frontier, exits or self.frontier, key))
        self.frontier = exits or self.frontier

    def next_id(self, prefix: str, name: str | None) -> str:
        if name is not None:
            return name
        used = len([k for k in (*self.transforms, *self.conditions) if k.startswith(prefix)])
        return f"{prefix}-{used + 1}"

    def _check_refs(self, expr: Expr, where: str) -> None:
        for ref in iter_refs(expr):
            if ref.source == "$input":
                continue
            if (
                ref.source not in self.steps
                and ref.source not in self.transforms
                and ref.source not in self.conditions
            ):
                raise DefinitionError(
                    f"workflow {self.workflow!r}: {where} reads {ref.describe()}, which is not "
                    "part of this workflow (a value from another workflow's composer?)"
                )


_CURRENT: contextvars.ContextVar[Composition | None] = contextvars.ContextVar(
    "hub_composition", default=None
)


def current(what: str) -> Composition:
    comp = _CURRENT.get()
    if comp is None:
        raise DefinitionError(
            f"{what} was called outside a workflow composer; call it inside the function "
            "decorated with @create_workflow(...)"
        )
    return comp


def active() -> Composition | None:
    return _CURRENT.get()


@contextmanager
def composing(comp: Composition) -> Iterator[Composition]:
    token = _CURRENT.set(comp)
    try:
        yield comp
    finally:
        _CURRENT.reset(token)


def transform(values: Any, fn: Callable[[Any], Any], *, name: str | None = None) -> Symbol:
    """Shape run-time values with a pure function, evaluated when the workflow runs.

    ``fn`` receives ``values`` resolved to JSON; it must not do I/O (put effects in steps).
    """
    comp = current("transform(...)")
    if not callable(fn):
        raise DefinitionError(f"workflow {comp.workflow!r}: transform needs a function")
    node_id = comp.next_id("transform", name)
    comp.check_id(node_id, "give the transform another name=")
    expr = comp.expr(values, f"transform {node_id!r}")
    comp._check_refs(expr, f"transform {node_id!r}")
    comp.transforms[node_id] = TransformNode(node_id, expr, fn)
    return comp.symbol(Ref(node_id))


class When:
    """``when(values, predicate).then(fn)``: steps composed in ``fn`` run only if it holds."""

    def __init__(self, comp: Composition, cond_id: str) -> None:
        self._comp = comp
        self._cond_id = cond_id

    def then(self, fn: Callable[[], Any]) -> Any:
        comp = self._comp
        comp.when_stack.append(self._cond_id)
        try:
            return fn()
        finally:
            comp.when_stack.pop()


def when(values: Any, predicate: Callable[[Any], Any], *, name: str | None = None) -> When:
    """Run the steps composed in ``.then(...)`` only when ``predicate(values)`` is true.

    The condition's id is deterministic (``when-1``, ``when-2``... in composition order, or
    ``name``), so a run resumed on another worker finds the same step names.
    """
    comp = current("when(...)")
    cond_id = comp.next_id("when", name)
    comp.check_id(cond_id, "give the condition another name=")
    expr = comp.expr(values, f"condition {cond_id!r}")
    comp._check_refs(expr, f"condition {cond_id!r}")
    comp.conditions[cond_id] = ConditionNode(cond_id, expr, predicate)
    return When(comp, cond_id)


def parallelize(*values: Symbol) -> tuple[Symbol, ...]:
    """Run the steps just composed side by side: ``parallelize(step_a(x), step_b(y))``.

    They all start after what preceded the first of them, and whatever follows waits for all.
    """
    comp = current("parallelize(...)")
    n = len(values)
    if n == 0:
        return ()
    ids = []
    for v in values:
        if not isinstance(v, Symbol):
            raise DefinitionError(
                f"workflow {comp.workflow!r}: parallelize(...) takes step results, got "
                f"{type(v).__name__}"
            )
        ids.append(object.__getattribute__(v, "_hub_ref").source)
    recent = comp.blocks[-n:]
    owners: list[Block] = []
    for node_id in ids:
        block = next((b for b in recent if b.key == node_id), None)
        if block is None or block in owners:
            raise DefinitionError(
                f"workflow {comp.workflow!r}: parallelize(...) takes the steps called just "
                f"before it, each once, e.g. parallelize(step_a(x), step_b(y)); {node_id!r} "
                "is not one of them"
            )
        owners.append(block)
    base = recent[0].before
    group = {node for b in recent for node in b.nodes}
    for b in recent:
        for node_id in b.nodes:
            node = comp.steps[node_id]
            reads = {r.source for r in iter_refs(node.input)} & (group - set(b.nodes))
            if reads:
                raise DefinitionError(
                    f"workflow {comp.workflow!r}: step {node_id!r} reads the output of "
                    f"{sorted(reads)} in the same parallelize(...); they cannot run side by side"
                )
            if node.after == b.before:
                comp.steps[node_id] = dataclasses.replace(node, after=base)
    exits = tuple(x for b in recent for x in b.after)
    del comp.blocks[-n:]
    comp.blocks.append(Block(sorted(group), base, exits, "|".join(ids)))
    comp.frontier = exits
    return tuple(values)
