"""The sampler of the hub's traces: the one ``OTEL_TRACES_SAMPLER`` names, less orphan SQL.

The Postgres driver's instrumentation makes a span of every statement. Those a hub span
encloses (a start, a step's own queries) belong in its trace; the rest are the worker's
background (lease heartbeats, claim polls, LISTEN), which would otherwise be one root trace
each, every few seconds, drowning the traces of events. So a statement with no parent is
dropped; every other decision is the configured sampler's.
"""

from __future__ import annotations

from collections.abc import Sequence

from opentelemetry.context import Context
from opentelemetry.sdk.trace import TracerProvider
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
