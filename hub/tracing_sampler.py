"""The sampler of the hub's traces: the one ``OTEL_TRACES_SAMPLER`` names, less orphan SQL;
and the id generator that lets the hub ask that sampler before it makes a root span.

The Postgres driver's instrumentation makes a span of every statement. Those a hub span
encloses (a start, a step's own queries) belong in its trace; the rest are the worker's
background (lease heartbeats, claim polls, LISTEN), which would otherwise be one root trace
each, every few seconds, drowning the traces of events. So a statement with no parent is
dropped; every other decision is the configured sampler's.
"""

from __future__ import annotations

import contextvars
from collections.abc import Sequence

from opentelemetry.context import Context
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, Sampler, SamplingResult
from opentelemetry.trace import Link, SpanKind, TraceState, get_current_span
from opentelemetry.util.types import Attributes


class StatementsInTraces(Sampler):
    """Drops root spans of database statements; asks ``sampler`` (default: the environment's,
    as the SDK reads it) about everything else."""

    def __init__(self, sampler: Sampler | None = None) -> None:
        self._sampler = sampler if sampler is not None else TracerProvider().sampler

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        if (attributes and ("db.system" in attributes or "db.system.name" in attributes)
                and not get_current_span(parent_context).get_span_context().is_valid):
            return ALWAYS_OFF.should_sample(parent_context, trace_id, name, kind, attributes,
                                            links, trace_state)
        return self._sampler.should_sample(parent_context, trace_id, name, kind, attributes,
                                           links, trace_state)

    def get_description(self) -> str:
        return f"StatementsInTraces{{{self._sampler.get_description()}}}"


_PRIMED: contextvars.ContextVar[int | None] = contextvars.ContextVar("hub_primed_trace_id",
                                                                    default=None)


class PrimedIds(RandomIdGenerator):
    """Random ids (the SDK's), except that the next trace id may be chosen first.

    Most records start a trace of their own, and at a ratio of 1% nearly all of those are
    sampled out. The hub draws the trace id and asks the sampler itself: when the answer is
    "out", it needs no span from the SDK at all (a context is carried on, as the SDK's own
    non-recording span would carry it); when it is "in", it primes this generator with the
    id it asked about, so the SDK's span has that id, and the SDK's own sampling of it
    decides (the same answer, for a sampler that reads the id)."""

    def generate_trace_id(self) -> int:
        primed = _PRIMED.get()
        if primed is not None:
            _PRIMED.set(None)
            return primed
        return super().generate_trace_id()

    @staticmethod
    def prime(trace_id: int) -> contextvars.Token[int | None]:
        return _PRIMED.set(trace_id)

    @staticmethod
    def unprime(token: contextvars.Token[int | None]) -> None:
        _PRIMED.reset(token)
