"""``create_step``: a named unit of work with its compensation and retry policy."""

from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Callable
from typing import Any, overload

from pydantic import BaseModel

from hub.engine.graph import Invoke, StepNode, StepOptions
from hub.errors import DefinitionError
from hub.sdk import compose
from hub.sdk.symbols import Symbol


def _normalise(fn: Callable[..., Any], step: str, role: str) -> Invoke:
    """Adapt ``fn`` to the engine's ``(input, ctx)`` calling convention, checked now."""
    if not callable(fn):
        raise DefinitionError(f"step {step!r}: {role} must be callable, got {fn!r}")
    try:
        params = [
            p
            for p in inspect.signature(fn).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        has_varargs = any(
            p.kind is p.VAR_POSITIONAL for p in inspect.signature(fn).parameters.values()
        )
    except (TypeError, ValueError):
        return fn
    if has_varargs or len(params) >= 2:
        return fn
    if len(params) == 1:
        return lambda inp, _ctx: fn(inp)
    return lambda _inp, _ctx: fn()


def _input_model(fn: Callable[..., Any]) -> type[BaseModel] | None:
    """The pydantic model the step's first parameter is annotated with, if any."""
    try:
        hints = typing.get_type_hints(fn)
        first = next(iter(inspect.signature(fn).parameters.values()), None)
    except Exception:
        return None
    if first is None:
        return None
    ann = hints.get(first.name)
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann
    return None


class StepDefinition:
    """A step, callable inside a composer; each call adds a node to the workflow's graph."""

    def __init__(
        self,
        name: str,
        invoke: Callable[..., Any],
        compensate: Callable[..., Any] | None,
        options: StepOptions,
        kind: str = "step",
    ) -> None:
        if not name or not isinstance(name, str):
            raise DefinitionError(f"a step needs a non-empty str name, got {name!r}")
        if "/" in name or name.startswith("$"):
            raise DefinitionError(f"step {name!r}: names cannot contain '/' or start with '$'")
        self.name = name
        self.fn = invoke
        self.compensate_fn = compensate
        self.options = options
        self.kind = kind
        self._invoke = _normalise(invoke, name, "invoke")
        self._compensate = _normalise(compensate, name, "compensate") if compensate else None
        self._model = _input_model(invoke)
        if options.max_retries < 0 or options.retry_interval < 0:
            raise DefinitionError(f"step {name!r}: max_retries and retry_interval must be >= 0")
        if options.timeout is not None and options.timeout <= 0:
            raise DefinitionError(f"step {name!r}: timeout must be > 0 seconds")

    def __call__(self, *args: Any, **kwargs: Any) -> Symbol:
        comp = compose.current(f"step {self.name!r}")
        if (args and kwargs) or len(args) > 1:
            raise DefinitionError(
                f"workflow {comp.workflow!r}: step {self.name!r} takes one input (a value, or "
                "keyword arguments that form a dict), got "
                f"{len(args)} positional and {len(kwargs)} keyword arguments"
            )
        raw = args[0] if args else (kwargs or None)
        node = StepNode(
            id=self.name,
            step_name=self.name,
            input=comp.expr(raw, f"input of step {self.name!r}"),
            after=(),
            when=(),
            options=self.options,
            invoke=self._invoke,
            compensate=self._compensate,
            kind=self.kind,
            input_model=self._model,
        )
        return comp.add_step(node)

    def config(self, *, name: str | None = None, **options: Any) -> StepDefinition:
        """The same step under another id and/or with other options, e.g. to use it twice."""
        try:
            new_options = dataclasses.replace(self.options, **options)
        except TypeError as exc:
            raise DefinitionError(f"step {self.name!r}: config(): {exc}") from None
        return StepDefinition(
            name or self.name, self.fn, self.compensate_fn, new_options, self.kind
        )

    def __repr__(self) -> str:
        return f"<step {self.name!r}>"


@overload
def create_step(
    name: str,
    invoke: None = None,
    compensate: Callable[..., Any] | None = None,
    **options: Any,
) -> Callable[[Callable[..., Any]], StepDefinition]: ...


@overload
def create_step(
    name: str,
    invoke: Callable[..., Any],
    compensate: Callable[..., Any] | None = None,
    **options: Any,
) -> StepDefinition: ...


def create_step(
    name: str,
    invoke: Callable[..., Any] | None = None,
    compensate: Callable[..., Any] | None = None,
    **options: Any,
) -> StepDefinition | Callable[[Callable[..., Any]], StepDefinition]:
    """Define a step: ``create_step(name, fn, compensate)`` or ``@create_step(name)``.

    ``fn(input, ctx)`` and ``compensate(compensate_input, ctx)`` may be sync or async. Options:
    ``max_retries``, ``retry_interval`` (seconds; grows by ``backoff``), ``timeout``,
    ``is_async``, ``no_compensation``, ``continue_on_permanent_failure``,
    ``skip_on_permanent_failure`` (True, or the id of the step to resume at), ``auto_retry``,
    ``background_execution``, ``compensate_async``.
    """
    try:
        opts = StepOptions(**options)
    except TypeError as exc:
        raise DefinitionError(f"step {name!r}: {exc}") from None

    if invoke is None:

        def decorate(fn: Callable[..., Any]) -> StepDefinition:
            return StepDefinition(name, fn, compensate, opts)

        return decorate
    return StepDefinition(name, invoke, compensate, opts)
