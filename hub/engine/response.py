"""What steps and workflows return: the contract between step code and the executor."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")

_UNSET: Any = object()


class StepResponse(Generic[T]):
    """A step's output and the input its compensation will receive (the output by default).

    ``StepResponse.permanent_failure(msg)`` fails the step with no retry, so the workflow
    compensates; ``StepResponse.skip()`` marks it skipped.
    """

    __slots__ = ("compensate_input", "kind", "message", "output")

    def __init__(self, output: T = None, compensate_input: Any = _UNSET) -> None:  # type: ignore[assignment]
        self.output = output
        self.compensate_input = output if compensate_input is _UNSET else compensate_input
        self.kind = "ok"
        self.message = ""

    @classmethod
    def permanent_failure(cls, message: str, compensate_input: Any = None) -> StepResponse[Any]:
        resp: StepResponse[Any] = StepResponse(None, compensate_input)
        resp.kind = "permanent_failure"
        resp.message = message
        return resp

    @classmethod
    def skip(cls) -> StepResponse[Any]:
        resp: StepResponse[Any] = StepResponse(None, None)
        resp.kind = "skip"
        return resp

    def __repr__(self) -> str:
        return f"StepResponse(kind={self.kind!r}, output={self.output!r})"


@dataclass(frozen=True)
class WorkflowResponse:
    """The composer's return: the workflow's result, built from run-time values."""

    result: Any = None
