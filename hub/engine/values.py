"""Run-time values: a step's input, a condition, the result, computed from stored outputs.

Pure: transforms and conditions are the workflow's own functions of values (a composer
holds no I/O), so the transition core may evaluate them.
"""

from __future__ import annotations

from collections.abc import Mapping

from hub.engine.graph import INPUT, Expr, Graph, Ref, StepNode
from hub.engine.run import StepState
from hub.engine.state import StepRecord
from hub.types import JSON


class ResolveError(Exception):
    """A transform or condition raised while computing a step's input."""


_HAS_OUTPUT = frozenset(
    {StepState.DONE, StepState.COMPENSATING, StepState.WAITING_TO_COMPENSATE,
     StepState.REVERTED, StepState.FAILED}
)


class Values:
    """Resolves expressions of ``graph`` against an input and the step records."""

    __slots__ = ("cache", "graph", "input", "steps")

    def __init__(self, graph: Graph, input: JSON, steps: Mapping[str, StepRecord]) -> None:
        self.graph = graph
        self.input = input
        self.steps = steps
        self.cache: dict[str, JSON] = {}
        """Transform values, computed once per ``Values`` (one state)."""

    def resolve(self, expr: Expr) -> JSON:
        """Replace every reference in ``expr`` by its run-time value."""
        if isinstance(expr, Ref):
            return _walk(self._source(expr.source), expr.path)
        if isinstance(expr, dict):
            return {k: self.resolve(v) for k, v in expr.items()}
        if isinstance(expr, list):
            return [self.resolve(v) for v in expr]
        return expr

    def _source(self, source: str) -> JSON:
        if source == INPUT:
            return self.input
        if source in self.graph.steps:
            st = self.steps.get(source)
            return st.output if st is not None and st.state in _HAS_OUTPUT else None
        if source in self.cache:
            return self.cache[source]
        node = self.graph.transforms.get(source)
        if node is None:
            raise ResolveError(f"unknown value source {source!r}")
        value = self.resolve(node.input)
        if node.fn is not None:
            try:
                value = node.fn(value)
            except Exception as exc:
                raise ResolveError(f"transform {source!r} raised {exc!r}") from exc
            if isinstance(value, Ref):
                raise ResolveError(f"transform {source!r} returned a reference")
        self.cache[source] = value
        return value

    def condition_holds(self, node: StepNode) -> bool:
        for cond_id in node.when:
            cond = self.graph.conditions[cond_id]
            value = self.resolve(cond.input)
            try:
                if not cond.predicate(value):
                    return False
            except Exception as exc:
                raise ResolveError(f"condition {cond_id!r} raised {exc!r}") from exc
        return True


def _walk(value: JSON, path: tuple[str | int, ...]) -> JSON:
    for key in path:
        if isinstance(value, dict):
            value = value.get(str(key)) if not isinstance(key, int) else value.get(key)
        elif isinstance(value, list) and isinstance(key, int) and -len(value) <= key < len(value):
            value = value[key]
        else:
            return None
    return value
