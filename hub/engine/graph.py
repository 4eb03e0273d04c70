"""A workflow definition as a value: nodes, edges and a version hash.

The composer runs once and leaves this frozen graph behind; the executor only ever reads it,
so an execution can resume on another worker, years of code later, on exactly the graph it
started with (the version is a hash of everything that shapes the run).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from hub.types import JSON

INPUT = "$input"
"""Source name of the workflow's input in a reference."""


@dataclass(frozen=True, slots=True)
class Ref:
    """A pointer to a value known only at run time: ``source`` is ``$input``, a step id or a
    transform id; ``path`` walks into it (dict keys, list indices)."""

    source: str
    path: tuple[str | int, ...] = ()

    def describe(self) -> str:
        return self.source + "".join(
            f"[{p}]" if isinstance(p, int) else f".{p}" for p in self.path
        )


Expr = Any
"""A JSON value in which any leaf may be a :class:`Ref` (dicts, lists and constants)."""

Invoke = Callable[[Any, Any], Any | Awaitable[Any]]
"""A step or compensation function: ``(input, ctx)``, sync or async."""


@dataclass(frozen=True, slots=True)
class StepOptions:
    """How the engine treats one step; part of the graph's version."""

    max_retries: int = 0
    retry_interval: float = 0.0
    backoff: float = 2.0
    max_retry_interval: float = 300.0
    timeout: float | None = None
    is_async: bool = False
    no_compensation: bool = False
    continue_on_permanent_failure: bool = False
    skip_on_permanent_failure: bool | str = False
    auto_retry: bool = True
    background_execution: bool = False
    compensate_async: bool = False

    def retry_delay(self, attempt: int) -> float:
        """Delay before attempt ``attempt + 1`` (exponential backoff, capped)."""
        delay = self.retry_interval * (self.backoff ** max(0, attempt - 1))
        return float(min(delay, self.max_retry_interval))


SLEEP_KIND = "sleep"
"""The kind of a durable sleep's node: no code, a due time (``hub.sdk.sleep``)."""
SLEEP_FOR = "seconds"
"""A sleep's input key: how long to wait, in seconds."""
SLEEP_UNTIL = "until"
"""A sleep's input key: when to wake (epoch seconds, or ISO 8601 text with an offset)."""


@dataclass(frozen=True, slots=True)
class FanoutSpec:
    """How a map step runs its item step once per item of a run-time list.

    ``key`` names an item (default: its index); it goes into each call's idempotency key, so
    a re-run or recovered fan-out makes each item's effect once. ``max_items`` overrides the
    hub's bound (``HUB_MAX_FANOUT_ITEMS``)."""

    item: StepNode
    max_concurrency: int
    max_items: int | None = None
    key: Callable[[Any], Any] | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class StepNode:
    """One step of the graph. ``after`` are the steps that must finish first; ``when`` the
    conditions that must all hold, else the step is skipped."""

    id: str
    step_name: str
    input: Expr
    after: tuple[str, ...]
    when: tuple[str, ...]
    options: StepOptions
    invoke: Invoke = field(compare=False, repr=False)
    compensate: Invoke | None = field(compare=False, repr=False)
    kind: str = "step"  # "step" | "hook" | "sleep" | "map" | "child"
    input_model: Any = field(default=None, compare=False, repr=False)
    fanout: FanoutSpec | None = None
    """Set on a map step: the step run per item."""
    child: str | None = None
    """Set on a child step: the workflow it starts as a child execution."""


@dataclass(frozen=True, slots=True)
class TransformNode:
    """Pure data shaping, evaluated when a consumer needs it (never checkpointed)."""

    id: str
    input: Expr
    fn: Callable[..., Any] | None = field(compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class ConditionNode:
    """A predicate over run-time values that gates the steps composed under ``when``."""

    id: str
    input: Expr
    predicate: Callable[[Any], Any] = field(compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Graph:
    """The static definition the executor runs."""

    workflow: str
    steps: Mapping[str, StepNode]
    transforms: Mapping[str, TransformNode]
    conditions: Mapping[str, ConditionNode]
    result: Expr
    version: str

    @staticmethod
    def build(
        workflow: str,
        steps: Mapping[str, StepNode],
        transforms: Mapping[str, TransformNode],
        conditions: Mapping[str, ConditionNode],
        result: Expr,
    ) -> Graph:
        shape = _shape(workflow, steps, transforms, conditions, result)
        version = hashlib.sha256(
            json.dumps(shape, sort_keys=True, separators=(",", ":")).encode()
        ).hexdigest()[:16]
        return Graph(workflow, dict(steps), dict(transforms), dict(conditions), result, version)

    def to_dict(self) -> dict[str, JSON]:
        """A drawable description: nodes, order edges and data edges."""
        nodes = []
        for node in self.steps.values():
            nodes.append({
                "id": node.id,
                "step": node.step_name,
                "kind": node.kind,
                "after": list(node.after),
                "when": list(node.when),
                "reads": sorted({r.source for r in iter_refs(node.input)}),
                "options": _options_dict(node.options),
                "compensates": node.compensate is not None and not node.options.no_compensation,
                **_extra(node),
            })
        return {
            "workflow": self.workflow,
            "version": self.version,
            "steps": nodes,
            "transforms": [
                {"id": t.id, "reads": sorted({r.source for r in iter_refs(t.input)})}
                for t in self.transforms.values()
            ],
            "conditions": [
                {"id": c.id, "reads": sorted({r.source for r in iter_refs(c.input)})}
                for c in self.conditions.values()
            ],
        }

    def to_mermaid(self) -> str:
        """The graph as a Mermaid flowchart, for docs and the console."""
        lines = ["flowchart TD"]
        for node in self.steps.values():
            label = node.id + {"hook": " (hook)", "child": f" (child {node.child})"}.get(
                node.kind, "")
            if node.fanout is not None:  # one node, drawn as a stack: each item runs the step
                label = f"{node.id} (each: {node.fanout.item.step_name})"
                lines.append(f'  {_mid(node.id)}[["{label}"]]')
            else:
                lines.append(f'  {_mid(node.id)}["{label}"]')
            for dep in node.after or ():
                lines.append(f"  {_mid(dep)} --> {_mid(node.id)}")
            if not node.after:
                lines.append(f"  start((start)) --> {_mid(node.id)}")
        return "\n".join(lines)


def _extra(node: StepNode) -> dict[str, JSON]:
    """What a map or child step adds to its drawable description."""
    out: dict[str, JSON] = {}
    if node.fanout is not None:
        f = node.fanout
        out["map"] = {"step": f.item.step_name, "max_concurrency": f.max_concurrency,
                      "max_items": f.max_items, "options": _options_dict(f.item.options),
                      "compensates": f.item.compensate is not None
                      and not f.item.options.no_compensation}
    if node.child is not None:
        out["child"] = node.child
    return out


def _mid(node_id: str) -> str:
    return "n_" + "".join(c if c.isalnum() else "_" for c in node_id)


def _options_dict(o: StepOptions) -> dict[str, JSON]:
    return {
        "max_retries": o.max_retries,
        "retry_interval": o.retry_interval,
        "backoff": o.backoff,
        "max_retry_interval": o.max_retry_interval,
        "timeout": o.timeout,
        "is_async": o.is_async,
        "no_compensation": o.no_compensation,
        "continue_on_permanent_failure": o.continue_on_permanent_failure,
        "skip_on_permanent_failure": o.skip_on_permanent_failure,
        "auto_retry": o.auto_retry,
        "background_execution": o.background_execution,
        "compensate_async": o.compensate_async,
    }


def expr_to_json(expr: Expr) -> JSON:
    """Serialise an expression for hashing and display (refs become ``{"$ref": ...}``)."""
    if isinstance(expr, Ref):
        return {"$ref": expr.source, "path": list(expr.path)}
    if isinstance(expr, dict):
        return {str(k): expr_to_json(v) for k, v in expr.items()}
    if isinstance(expr, list | tuple):
        return [expr_to_json(v) for v in expr]
    return expr


def iter_refs(expr: Expr) -> list[Ref]:
    """Every reference inside an expression."""
    if isinstance(expr, Ref):
        return [expr]
    if isinstance(expr, dict):
        return [r for v in expr.values() for r in iter_refs(v)]
    if isinstance(expr, list | tuple):
        return [r for v in expr for r in iter_refs(v)]
    return []


def _shape_extra(n: StepNode) -> dict[str, JSON]:
    """A map's item step and a child's workflow shape the run, so they are in the hash (a
    step without either hashes as before: existing versions do not move)."""
    out: dict[str, JSON] = {}
    if n.fanout is not None:
        f, item = n.fanout, n.fanout.item
        key = f.key
        out["map"] = {"step": item.step_name, "options": _options_dict(item.options),
                      "compensate": item.compensate is not None,
                      "max_concurrency": f.max_concurrency, "max_items": f.max_items,
                      "key": None if key is None
                      else f"{getattr(key, '__module__', '')}.{key.__qualname__}"}
    if n.child is not None:
        out["child"] = n.child
    return out


def _shape(
    workflow: str,
    steps: Mapping[str, StepNode],
    transforms: Mapping[str, TransformNode],
    conditions: Mapping[str, ConditionNode],
    result: Expr,
) -> JSON:
    def fn_name(fn: Any) -> str | None:
        return None if fn is None else f"{getattr(fn, '__module__', '')}.{fn.__qualname__}"

    return {
        "workflow": workflow,
        "steps": [
            {
                "id": n.id,
                "step": n.step_name,
                "kind": n.kind,
                "input": expr_to_json(n.input),
                "after": list(n.after),
                "when": list(n.when),
                "options": _options_dict(n.options),
                "compensate": n.compensate is not None,
                **_shape_extra(n),
            }
            for n in steps.values()
        ],
        "transforms": [
            {"id": t.id, "input": expr_to_json(t.input), "fn": fn_name(t.fn)}
            for t in transforms.values()
        ],
        "conditions": [
            {"id": c.id, "input": expr_to_json(c.input), "fn": fn_name(c.predicate)}
            for c in conditions.values()
        ],
        "result": expr_to_json(result),
    }
