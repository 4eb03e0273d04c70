"""The link from an execution to its trace, in the trace UI ``HUB_TRACE_UI_URL`` names."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hub.tracing import trace_id_of


def trace_url(template: str | None, trigger: Mapping[str, Any] | None) -> str | None:
    """The page of the execution's trace (its start's, else its upstream's trace id), or
    None without a trace UI or a trace context."""
    if template is None:
        return None
    trace_id = trace_id_of(trigger)
    return None if trace_id is None else template.replace("{trace_id}", trace_id)
