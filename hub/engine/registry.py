"""Which workflow definitions this process can run, by name and version."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from pydantic import BaseModel

from hub.engine.graph import Graph
from hub.errors import DefinitionError, UnknownWorkflow


@dataclass
class WorkflowSpec:
    """A registered workflow: its graph plus the options that are not part of the graph."""

    name: str
    graph: Graph
    input_model: type[BaseModel] | None
    store: bool = True
    retention_time: timedelta | None = None
    idempotent: bool = True
    module: str = ""
    hooks: dict[str, tuple[Callable[..., Any], Callable[..., Any] | None]] = field(
        default_factory=dict
    )
    hook_names: tuple[str, ...] = ()

    @property
    def version(self) -> str:
        return self.graph.version


class Registry:
    """Every definition this process knows; old versions stay so their executions can finish."""

    def __init__(self) -> None:
        self._current: dict[str, WorkflowSpec] = {}
        self._versions: dict[tuple[str, str], WorkflowSpec] = {}

    def add(self, spec: WorkflowSpec) -> None:
        old = self._current.get(spec.name)
        if old is not None and old.module and spec.module and old.module != spec.module:
            raise DefinitionError(
                f"workflow {spec.name!r} is defined twice: in {old.module} and in "
                f"{spec.module}; workflow names must be unique"
            )
        self._current[spec.name] = spec
        self._versions[(spec.name, spec.version)] = spec

    def get(self, name: str, version: str | None = None) -> WorkflowSpec:
        if version is None:
            spec = self._current.get(name)
            if spec is None:
                known = ", ".join(sorted(self._current)) or "none"
                raise UnknownWorkflow(f"no workflow named {name!r} is registered (known: {known})")
            return spec
        found = self._versions.get((name, version))
        if found is None:
            have = sorted(v for (n, v) in self._versions if n == name)
            raise UnknownWorkflow(
                f"workflow {name!r} version {version} is not registered in this process "
                f"(registered versions: {', '.join(have) or 'none'}); deploy a worker that "
                "has it, then resume the execution"
            )
        return found

    def names(self) -> list[str]:
        return sorted(self._current)

    def __iter__(self) -> Iterator[WorkflowSpec]:
        return iter(list(self._current.values()))


REGISTRY = Registry()
"""Definitions register here when their module is imported."""
