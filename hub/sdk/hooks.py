"""``create_hook``: a named point in a workflow where a handler is plugged in later.

An integration engineer registers one handler (and its compensation) with
``wf.hooks.<name>(handler, compensate)`` without editing the workflow; with no handler the
hook's step is skipped. The handler is code, not graph, so registering it keeps the version.
"""

from __future__ import annotations

import inspect
from typing import Any

from hub.engine.graph import StepNode, StepOptions
from hub.engine.response import StepResponse
from hub.errors import DefinitionError
from hub.sdk import compose
from hub.sdk.symbols import Symbol


def create_hook(name: str, values: Any = None) -> Symbol:
    """Declare hook ``name`` here, passing ``values`` to its handler; returns its output."""
    comp = compose.current(f"create_hook({name!r})")
    if name in comp.hooks:
        raise DefinitionError(f"workflow {comp.workflow!r}: hook {name!r} declared twice")
    table = comp.hook_table

    async def invoke(inp: Any, ctx: Any) -> Any:
        entry = table.get(name)
        if entry is None:
            return StepResponse.skip()
        out = entry[0](inp, ctx)
        return await out if inspect.isawaitable(out) else out

    async def compensate(inp: Any, ctx: Any) -> Any:
        entry = table.get(name)
        if entry is None or entry[1] is None:
            return None
        out = entry[1](inp, ctx)
        return await out if inspect.isawaitable(out) else out

    comp.hooks.append(name)
    node = StepNode(
        id=name,
        step_name=name,
        input=comp.expr(values, f"input of hook {name!r}"),
        after=(),
        when=(),
        options=StepOptions(),
        invoke=invoke,
        compensate=compensate,
        kind="hook",
    )
    return comp.add_step(node)
