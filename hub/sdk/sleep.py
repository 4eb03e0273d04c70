"""``sleep`` and ``sleep_until``: durable waits, composed like steps.

A sleep is a step whose record carries a due time and no code: the engine sets it waiting
until then (invariant 8: time is data, so a restart loses none, and a sleep longer than the
hold threshold lets the lease go). A cancel wakes it, and the run ends cancelled; an
operator may end it early (``Hub.wake``).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from hub.engine.graph import SLEEP_FOR, SLEEP_KIND, SLEEP_UNTIL, StepNode, StepOptions
from hub.errors import DefinitionError
from hub.sdk import compose
from hub.sdk.symbols import Symbol


def _never_invoked(_inp: Any, _ctx: Any) -> Any:
    raise RuntimeError("a sleep runs no code; the engine completes it at its due time")


def _sleep_node(comp: compose.Composition, name: str | None, key: str, value: Any) -> Symbol:
    node_id = name or "sleep"
    return comp.add_step(StepNode(
        id=node_id, step_name=node_id, input={key: comp.expr(value, f"sleep {node_id!r}")},
        after=(), when=(), options=StepOptions(no_compensation=True), invoke=_never_invoked,
        compensate=None, kind=SLEEP_KIND))


def sleep(duration: float | timedelta | Symbol, *, name: str | None = None) -> Symbol:
    """Wait ``duration`` (seconds, a ``timedelta``, or a run-time value in seconds) before
    the steps that follow. ``name``: the step id (default ``sleep``; two sleeps need two)."""
    comp = compose.current("sleep(...)")
    if isinstance(duration, timedelta):
        duration = duration.total_seconds()
    if not isinstance(duration, Symbol) and (
            isinstance(duration, bool) or not isinstance(duration, int | float)
            or duration < 0):
        raise DefinitionError(
            f"workflow {comp.workflow!r}: sleep(...) takes seconds >= 0, a timedelta or a "
            f"run-time value, got {duration!r}")
    return _sleep_node(comp, name, SLEEP_FOR, duration)


def sleep_until(when: datetime | str | float | Symbol, *, name: str | None = None) -> Symbol:
    """Wait until ``when`` (an aware ``datetime``, an ISO 8601 text with an offset, epoch
    seconds, or a run-time value of one of these) before the steps that follow."""
    comp = compose.current("sleep_until(...)")
    if isinstance(when, datetime):
        if when.tzinfo is None:
            raise DefinitionError(
                f"workflow {comp.workflow!r}: sleep_until(...) needs an aware datetime "
                "(with tzinfo), got a naive one")
        when = when.timestamp()
    return _sleep_node(comp, name, SLEEP_UNTIL, when)
